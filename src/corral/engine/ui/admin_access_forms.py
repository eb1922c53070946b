"""The access admin pages and their actions: projects (create, delete, quotas), role
assignments (on a project's page and on a user's), custom roles (create, delete).

Same rules as the other pages (routes.py): one permission per route, the API's for the same
action (routes/projects.py, roles.py), and the same services. A form's bad input comes back
on its page (4xx) with the error next to the field it concerns and what was typed kept; a
refused delete (a project that still holds things, a role in use) on the list, saying why.
What the pages show is admin_access_views.py."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from corral.api.projects import ProjectCreate, QuotaSet, RoleAssignmentIn, RoleCreate
from corral.engine.context import EngineContext
from corral.engine.permissions import ALL_PROJECTS
from corral.engine.services import projects, roles, users
from corral.engine.ui import admin_access_views as aav
from corral.engine.ui import admin_views as av
from corral.engine.ui import session
from corral.engine.ui.routes import UiRoute, render, ui_need
from corral.engine.ui.session import Caller
from corral.errors import Conflict, CorralError, InvalidInput

router = APIRouter(route_class=UiRoute, include_in_schema=False)
_TEXT_MAX = 1024  # longer than any field of these forms: the API's own limits say what is


def _ctx(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.ctx
    return ctx


def _page(request: Request, caller: Caller, page: av.Page, status: int = 200) -> Response:
    return render(request, "admin.html", caller, status=status, page=page.nav, p=page)


def _back(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


async def _typed(request: Request, *fields: str) -> dict[str, str]:
    sent = await session.form(request)
    return {f: sent.get(f, "").strip()[:_TEXT_MAX] for f in fields}


def _refused(exc: ValidationError | CorralError, fields: tuple[str, ...]) -> tuple[
        dict[str, str], int]:
    """An error per form field (a pydantic ``loc`` or CorralError.field; else the first
    field) and the page's status: 422, or the API's 4xx. A 5xx is no input's fault."""
    errors: dict[str, str] = {}
    if isinstance(exc, ValidationError):
        for err in exc.errors():
            where = str(err["loc"][0]) if err["loc"] else ""
            errors.setdefault(where if where in fields else fields[0],
                              _sentence(str(err["msg"]).removeprefix("Value error, ")))
        return errors, 422
    if exc.status >= 500:
        raise exc
    errors[exc.field if exc.field in fields else fields[0]] = _sentence(exc.message)
    return errors, exc.status


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- projects -------------------------------------------------------------------------------

@router.get("/projects", response_class=HTMLResponse)
def project_list(request: Request,
                 caller: Caller = Depends(ui_need("project.read"))) -> Response:
    return _page(request, caller, aav.projects_page(_ctx(request), caller.who))


@router.post("/projects", response_class=HTMLResponse)
async def project_create(request: Request,
                         caller: Caller = Depends(ui_need("project.create"))) -> Response:
    """An empty project (no limits: its page sets them); then its page."""
    ctx = _ctx(request)
    fields = ("name", "description")
    typed = await _typed(request, *fields)
    try:
        req = ProjectCreate(name=typed["name"], description=typed["description"])
        await run_in_threadpool(projects.create, ctx, req.name, req.description)
    except (ValidationError, CorralError) as exc:
        errors, status = _refused(exc, fields)
        form = aav.Form(typed, errors)
        return _page(request, caller, aav.projects_page(ctx, caller.who, create=form), status)
    return _back(f"/projects/{quote(req.name, safe='')}")


@router.post("/projects/{name}/delete", response_class=HTMLResponse)
async def project_delete(request: Request, name: str,
                         caller: Caller = Depends(ui_need("project.delete"))) -> Response:
    """Refused (409) while it holds anything: the list says so, naming what it holds."""
    ctx = _ctx(request)
    name = name[:63]
    request.state.audit_project = name
    projects.show(ctx, name, caller.who.access)  # 404 for one the caller does not see
    try:
        await run_in_threadpool(projects.delete, ctx, name)
    except Conflict as exc:
        notice = f"Project {name} was not deleted: {exc.message}."
        return _page(request, caller, aav.projects_page(ctx, caller.who, notice=notice), 409)
    return _back("/projects")


@router.get("/projects/{name}", response_class=HTMLResponse)
def project_detail(request: Request, name: str,
                   caller: Caller = Depends(ui_need("project.read"))) -> Response:
    return _page(request, caller, aav.project_page(_ctx(request), caller.who, name[:63]))


@router.post("/projects/{name}/quotas", response_class=HTMLResponse)
async def project_quotas(request: Request, name: str,
                         caller: Caller = Depends(ui_need("project.update"))) -> Response:
    """Set the limits the form changed (empty: no limit); those left as shown stay."""
    ctx = _ctx(request)
    name = name[:63]
    request.state.audit_project = name
    current = projects.show(ctx, name, caller.who.access)  # 404 first
    sent = await session.form(request)  # a field not sent stays (as the API's QuotaSet)
    typed = {q: sent[q].strip()[:_TEXT_MAX] for q in aav.SETTABLE if q in sent}
    changes, errors = aav.quota_changes(current, typed)
    status = 422
    if not errors and changes:
        try:
            req = QuotaSet.model_validate(changes)  # the API's limits (0 to 2^62)
            await run_in_threadpool(projects.set_quota, ctx, name, req.given())
        except (ValidationError, CorralError) as exc:
            errors, status = _refused(exc, aav.SETTABLE)
    if errors:
        page = aav.project_page(ctx, caller.who, name, quota=aav.Form(typed, errors))
        return _page(request, caller, page, status)
    return _back(f"/projects/{quote(name, safe='')}")


@router.post("/projects/{name}/roles", response_class=HTMLResponse)
async def project_assign(request: Request, name: str,
                         caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Give a user (or @group) a role in this project."""
    ctx = _ctx(request)
    name = name[:63]
    request.state.audit_project = name
    projects.show(ctx, name, caller.who.access)  # 404 first
    fields = ("subject", "role")
    typed = await _typed(request, *fields)
    try:
        req = RoleAssignmentIn(subject=typed["subject"], role=typed["role"], project=name)
        await run_in_threadpool(roles.assign, ctx, req.subject, req.role, req.project)
    except (ValidationError, CorralError) as exc:
        errors, status = _refused(exc, fields)
        page = aav.project_page(ctx, caller.who, name, assign=aav.Form(typed, errors))
        return _page(request, caller, page, status)
    return _back(f"/projects/{quote(name, safe='')}#assignments")


@router.post("/projects/{name}/roles/remove", response_class=HTMLResponse)
async def project_unassign(request: Request, name: str, subject: str = "", role: str = "",
                           caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Remove one assignment in this project (404 for one that is not there)."""
    ctx = _ctx(request)
    name = name[:63]
    request.state.audit_project = name
    projects.show(ctx, name, caller.who.access)
    await run_in_threadpool(roles.unassign, ctx, subject[:256], role[:63], name)
    return _back(f"/projects/{quote(name, safe='')}#assignments")


# -- users' role assignments ----------------------------------------------------------------

@router.get("/users/{name}", response_class=HTMLResponse)
def user_detail(request: Request, name: str,
                caller: Caller = Depends(ui_need("user.read"))) -> Response:
    return _page(request, caller, aav.user_page(_ctx(request), caller.who, name[:64]))


@router.post("/users/{name}/roles", response_class=HTMLResponse)
async def user_assign(request: Request, name: str,
                      caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Give the user a role in one project, or on every one (``*``)."""
    ctx = _ctx(request)
    name = name[:64]
    fields = ("project", "role")
    typed = await _typed(request, *fields)
    request.state.audit_project = typed["project"][:63] or None
    users.get(ctx, name)  # 404 for none
    try:
        if not typed["project"]:
            raise InvalidInput("choose a project, or every project (*)", field="project")
        if typed["project"] != ALL_PROJECTS:
            projects.show(ctx, typed["project"][:63], caller.who.access)  # as none: 404
        req = RoleAssignmentIn(subject=name, role=typed["role"], project=typed["project"])
        await run_in_threadpool(roles.assign, ctx, req.subject, req.role, req.project)
    except (ValidationError, CorralError) as exc:
        errors, status = _refused(exc, fields)
        return _page(request, caller, aav.user_page(ctx, caller.who, name,
                                                    aav.Form(typed, errors)), status)
    return _back(f"/users/{quote(name, safe='')}#assignments")


@router.post("/users/{name}/roles/remove", response_class=HTMLResponse)
async def user_unassign(request: Request, name: str, project: str = "", role: str = "",
                        caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Remove one of the user's assignments (?project= is the audit log's project too)."""
    await run_in_threadpool(roles.unassign, _ctx(request), name[:64], role[:63],
                            project[:63] or ALL_PROJECTS)
    return _back(f"/users/{quote(name, safe='')}#assignments")


# -- roles ----------------------------------------------------------------------------------

@router.get("/roles", response_class=HTMLResponse)
def role_list(request: Request, caller: Caller = Depends(ui_need("role.read"))) -> Response:
    return _page(request, caller, aav.roles_page(_ctx(request), caller.who))


@router.post("/roles", response_class=HTMLResponse)
async def role_create(request: Request,
                      caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """A custom role: the permissions its patterns match (``vm.*, *.read``)."""
    ctx = _ctx(request)
    fields = ("name", "permissions", "description")
    typed = await _typed(request, *fields)
    patterns = typed["permissions"].replace(",", " ").split()
    try:
        req = RoleCreate(name=typed["name"], description=typed["description"],
                         permissions=patterns)
        await run_in_threadpool(roles.create_role, ctx, req.name, req.permissions,
                                req.description)
    except (ValidationError, CorralError) as exc:
        errors, status = _refused(exc, fields)
        page = aav.roles_page(ctx, caller.who, create=aav.Form(typed, errors))
        return _page(request, caller, page, status)
    return _back("/roles")


@router.post("/roles/{name}/delete", response_class=HTMLResponse)
async def role_delete(request: Request, name: str,
                      caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Refused (409) for a built-in role and one held: the list says so, naming who."""
    ctx = _ctx(request)
    try:
        await run_in_threadpool(roles.delete_role, ctx, name[:63])
    except Conflict as exc:
        notice = f"Role {name[:63]} was not deleted: {exc.message}."
        return _page(request, caller, aav.roles_page(ctx, caller.who, notice=notice), 409)
    return _back("/roles")
