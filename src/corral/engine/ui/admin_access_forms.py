"""The access admin pages and their actions: projects (create, delete, quotas), role
assignments (on a project's page and on a user's), custom roles (create, delete).

Same rules as the other pages (routes.py): one permission per route, the API's for the same
action (routes/projects.py, roles.py), and the same services. A form's bad input comes back
on its page (4xx) with the error next to the field it concerns and what was typed kept; a
refused delete (a project that still holds things, a role in use) on the list, saying why.
What the pages show is admin_access_views.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from corral.api.projects import ProjectCreate, ProjectInfo, QuotaSet, RoleAssignmentIn, RoleCreate
from corral.engine.permissions import ALL_PROJECTS
from corral.engine.services import projects, roles, users
from corral.engine.ui import admin_access_views as aav
from corral.engine.ui import session
from corral.engine.ui.admin_common import back, show
from corral.engine.ui.admin_views import quote_name
from corral.engine.ui.forms import Form, same, submit, typed
from corral.engine.ui.routes import UiRoute, ctx_of, ui_need
from corral.engine.ui.session import Caller
from corral.errors import Conflict, InvalidInput

router = APIRouter(route_class=UiRoute, include_in_schema=False)


# a form's fields (the API's names); an error of none goes to the first
PROJECT_FIELDS = same(("name", "description"))
QUOTA_FIELDS = same(aav.SETTABLE)
ASSIGN_FIELDS = same(("subject", "role"))  # on a project's page
USER_ASSIGN_FIELDS = same(("project", "role"))  # on a user's
ROLE_FIELDS = same(("name", "permissions", "description"))


def _project(request: Request, caller: Caller, name: str) -> ProjectInfo:
    """The path's project if the caller sees it (else 404, as for none); the audit log's."""
    name = name[:63]
    request.state.audit_project = name
    return projects.show(ctx_of(request), name, caller.who.access)


# -- projects -------------------------------------------------------------------------------

@router.get("/projects", response_class=HTMLResponse)
def project_list(request: Request,
                 caller: Caller = Depends(ui_need("project.read"))) -> Response:
    return show(request, caller, aav.projects_page(ctx_of(request), caller.who))


@router.post("/projects", response_class=HTMLResponse)
async def project_create(request: Request,
                         caller: Caller = Depends(ui_need("project.create"))) -> Response:
    """An empty project (no limits: its page sets them); then its page."""
    ctx = ctx_of(request)
    form = Form(await typed(request, PROJECT_FIELDS))
    v = form.values
    _, status = await submit(form, PROJECT_FIELDS, "name",
                             lambda: ProjectCreate(name=v["name"], description=v["description"]),
                             lambda req: projects.create(ctx, req.name, req.description))
    if form.errors:
        return show(request, caller, aav.projects_page(ctx, caller.who, create=form), status)
    return back(f"/projects/{quote_name(v['name'])}")


@router.post("/projects/{name}/delete", response_class=HTMLResponse)
async def project_delete(request: Request, name: str,
                         caller: Caller = Depends(ui_need("project.delete"))) -> Response:
    """Refused (409) while it holds anything: the list says so, naming what it holds."""
    ctx = ctx_of(request)
    name = _project(request, caller, name).name
    try:
        await run_in_threadpool(projects.delete, ctx, name)
    except Conflict as exc:
        notice = f"Project {name} was not deleted: {exc.message}."
        return show(request, caller, aav.projects_page(ctx, caller.who, notice=notice), 409)
    return back("/projects")


@router.get("/projects/{name}", response_class=HTMLResponse)
def project_detail(request: Request, name: str,
                   caller: Caller = Depends(ui_need("project.read"))) -> Response:
    return show(request, caller, aav.project_page(ctx_of(request), caller.who, name[:63]))


@router.post("/projects/{name}/quotas", response_class=HTMLResponse)
async def project_quotas(request: Request, name: str,
                         caller: Caller = Depends(ui_need("project.update"))) -> Response:
    """Set the limits the form changed (empty: no limit); those left as shown stay."""
    ctx = ctx_of(request)
    current = _project(request, caller, name)
    sent = await session.form(request)  # a field not sent stays (as the API's QuotaSet)
    form = Form(await typed(request, [q for q in aav.SETTABLE if q in sent]))
    changes, form.errors = aav.quota_changes(current, form.values)
    status = 422
    if changes or form.errors:
        _, status = await submit(form, QUOTA_FIELDS, aav.SETTABLE[0],
                                 lambda: QuotaSet.model_validate(changes),  # 0 to 2^62
                                 lambda req: projects.set_quota(ctx, current.name, req.given()))
    if form.errors:
        page = aav.project_page(ctx, caller.who, current.name, quota=form)
        return show(request, caller, page, status)
    return back(f"/projects/{quote_name(current.name)}")


@router.post("/projects/{name}/roles", response_class=HTMLResponse)
async def project_assign(request: Request, name: str,
                         caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Give a user (or @group) a role in this project."""
    ctx = ctx_of(request)
    name = _project(request, caller, name).name
    form = Form(await typed(request, ASSIGN_FIELDS))
    v = form.values
    _, status = await submit(
        form, ASSIGN_FIELDS, "subject",
        lambda: RoleAssignmentIn(subject=v["subject"], role=v["role"], project=name),
        lambda req: roles.assign(ctx, req.subject, req.role, req.project))
    if form.errors:
        page = aav.project_page(ctx, caller.who, name, assign=form)
        return show(request, caller, page, status)
    return back(f"/projects/{quote_name(name)}#assignments")


@router.post("/projects/{name}/roles/remove", response_class=HTMLResponse)
async def project_unassign(request: Request, name: str, subject: str = "", role: str = "",
                           caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Remove one assignment in this project (404 for one that is not there)."""
    name = _project(request, caller, name).name
    await run_in_threadpool(roles.unassign, ctx_of(request), subject[:256], role[:63], name)
    return back(f"/projects/{quote_name(name)}#assignments")


# -- users' role assignments ----------------------------------------------------------------

@router.get("/users/{name}", response_class=HTMLResponse)
def user_detail(request: Request, name: str,
                caller: Caller = Depends(ui_need("user.read"))) -> Response:
    return show(request, caller, aav.user_page(ctx_of(request), caller.who, name[:64]))


@router.post("/users/{name}/roles", response_class=HTMLResponse)
async def user_assign(request: Request, name: str,
                      caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Give the user a role in one project, or on every one (``*``)."""
    ctx = ctx_of(request)
    name = name[:64]
    form = Form(await typed(request, USER_ASSIGN_FIELDS))
    project = form.values["project"][:63]
    request.state.audit_project = project or None
    users.get(ctx, name)  # 404 for none

    def assignment() -> RoleAssignmentIn:
        if not project:
            raise InvalidInput("choose a project, or every project (*)", field="project")
        if project != ALL_PROJECTS:
            projects.show(ctx, project, caller.who.access)  # as none: 404
        return RoleAssignmentIn(subject=name, role=form.values["role"],
                                project=form.values["project"])

    _, status = await submit(form, USER_ASSIGN_FIELDS, "project", assignment,
                             lambda req: roles.assign(ctx, req.subject, req.role, req.project))
    if form.errors:
        return show(request, caller, aav.user_page(ctx, caller.who, name, form), status)
    return back(f"/users/{quote_name(name)}#assignments")


@router.post("/users/{name}/roles/remove", response_class=HTMLResponse)
async def user_unassign(request: Request, name: str, project: str = "", role: str = "",
                        caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Remove one of the user's assignments (?project= is the audit log's project too)."""
    await run_in_threadpool(roles.unassign, ctx_of(request), name[:64], role[:63],
                            project[:63] or ALL_PROJECTS)
    return back(f"/users/{quote_name(name)}#assignments")


# -- roles ----------------------------------------------------------------------------------

@router.get("/roles", response_class=HTMLResponse)
def role_list(request: Request, caller: Caller = Depends(ui_need("role.read"))) -> Response:
    return show(request, caller, aav.roles_page(ctx_of(request), caller.who))


@router.post("/roles", response_class=HTMLResponse)
async def role_create(request: Request,
                      caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """A custom role: the permissions its patterns match (``vm.*, *.read``)."""
    ctx = ctx_of(request)
    form = Form(await typed(request, ROLE_FIELDS))
    v = form.values
    _, status = await submit(
        form, ROLE_FIELDS, "name",
        lambda: RoleCreate(name=v["name"], description=v["description"],
                           permissions=v["permissions"].replace(",", " ").split()),
        lambda req: roles.create_role(ctx, req.name, req.permissions, req.description))
    if form.errors:
        return show(request, caller, aav.roles_page(ctx, caller.who, create=form), status)
    return back("/roles")


@router.post("/roles/{name}/delete", response_class=HTMLResponse)
async def role_delete(request: Request, name: str,
                      caller: Caller = Depends(ui_need("role.update"))) -> Response:
    """Refused (409) for a built-in role and one held: the list says so, naming who."""
    ctx = ctx_of(request)
    try:
        await run_in_threadpool(roles.delete_role, ctx, name[:63])
    except Conflict as exc:
        notice = f"Role {name[:63]} was not deleted: {exc.message}."
        return show(request, caller, aav.roles_page(ctx, caller.who, notice=notice), 409)
    return back("/roles")
