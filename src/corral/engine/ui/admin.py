"""The admin pages: hosts (maintenance, activate), networks, security groups, storage
pools and volumes, images and templates, projects and quotas, users (create, delete),
roles, the audit log. Same rules as the other pages (routes.py): one permission per
route; a project-scoped resource is checked again in its project (else 404 or 403)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from corral.api.users import UserCreate
from corral.engine.context import EngineContext
from corral.engine.services import host_lifecycle, images, networks, users, vm_clones
from corral.engine.ui import admin_storage_views as storage
from corral.engine.ui import admin_views as av
from corral.engine.ui import session, views
from corral.engine.ui.routes import UiRoute, render, ui_need
from corral.engine.ui.session import Caller
from corral.errors import CorralError, Forbidden

router = APIRouter(route_class=UiRoute, include_in_schema=False)


def _ctx(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.ctx
    return ctx


def _page(request: Request, caller: Caller, page: av.Page, status: int = 200,
          **values: Any) -> Response:
    return render(request, "admin.html", caller, status=status, page=page.nav, p=page,
                  **values)


def _back(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _check(caller: Caller, permission: str, project: str) -> None:
    if not views.may(caller.who, permission, project):
        raise Forbidden(f"your role in project {project} does not allow this ({permission})",
                        permission=permission)


# -- hosts ----------------------------------------------------------------------------------

@router.get("/hosts", response_class=HTMLResponse)
def host_list(request: Request, caller: Caller = Depends(ui_need("host.read"))) -> Response:
    return _page(request, caller, av.hosts_page(_ctx(request)))


@router.get("/hosts/{name}", response_class=HTMLResponse)
def host_detail(request: Request, name: str,
                caller: Caller = Depends(ui_need("host.read"))) -> Response:
    """Its facts (its memory asked of its agent now), the VMs on it, maintenance/activate."""
    return _page(request, caller, av.host_page(_ctx(request), caller.who, name))


@router.post("/hosts/{name}/maintenance", response_class=HTMLResponse)
async def host_maintenance(request: Request, name: str,
                           caller: Caller = Depends(ui_need("host.update"))) -> Response:
    """Evacuate the host (an operation; its page shows the state as it goes)."""
    await run_in_threadpool(host_lifecycle.maintenance, _ctx(request), name)
    return _back(f"/hosts/{quote(name)}")


@router.post("/hosts/{name}/activate", response_class=HTMLResponse)
async def host_activate(request: Request, name: str,
                        caller: Caller = Depends(ui_need("host.update"))) -> Response:
    await run_in_threadpool(host_lifecycle.activate, _ctx(request), name)
    return _back(f"/hosts/{quote(name)}")


# -- networks, security groups --------------------------------------------------------------

@router.get("/networks", response_class=HTMLResponse)
def network_list(request: Request,
                 caller: Caller = Depends(ui_need("network.read"))) -> Response:
    return _page(request, caller, av.networks_page(_ctx(request), caller.who))


@router.get("/networks/{name}", response_class=HTMLResponse)
def network_detail(request: Request, name: str,
                   caller: Caller = Depends(ui_need("network.read"))) -> Response:
    return _page(request, caller, av.network_page(_ctx(request), caller.who, name))


@router.post("/networks/{name}/delete", response_class=HTMLResponse)
async def network_delete(request: Request, name: str,
                         caller: Caller = Depends(ui_need("network.delete"))) -> Response:
    ctx = _ctx(request)
    av.network_page(ctx, caller.who, name)  # 404 for one the caller may not read
    project = networks.get(ctx, name).project
    request.state.audit_project = project
    _check(caller, "network.delete", project)
    await run_in_threadpool(networks.delete, ctx, name)
    return _back("/networks")


@router.get("/security-groups", response_class=HTMLResponse)
def group_list(request: Request, caller: Caller = Depends(ui_need("sg.read"))) -> Response:
    return _page(request, caller, av.groups_page(_ctx(request), caller.who))


@router.get("/security-groups/{name}", response_class=HTMLResponse)
def group_detail(request: Request, name: str,
                 caller: Caller = Depends(ui_need("sg.read"))) -> Response:
    return _page(request, caller, av.group_page(_ctx(request), caller.who, name))


# -- storage --------------------------------------------------------------------------------

@router.get("/pools", response_class=HTMLResponse)
def pool_list(request: Request, op: str = "",
              caller: Caller = Depends(ui_need("pool.read"))) -> Response:
    """With *Add pool* and *Delete* (admin_storage_forms.py); ``op``: one they started."""
    return _page(request, caller, storage.pools_page(_ctx(request), caller.who, op))


@router.get("/pools/{name}", response_class=HTMLResponse)
def pool_detail(request: Request, name: str, op: str = "",
                caller: Caller = Depends(ui_need("pool.read"))) -> Response:
    return _page(request, caller, storage.pool_page(_ctx(request), caller.who, name, op))


# -- images and templates -------------------------------------------------------------------

@router.get("/images", response_class=HTMLResponse)
def image_list(request: Request, op: str = "",
               caller: Caller = Depends(ui_need("image.read"))) -> Response:
    """With *Import image* and *Make template* (admin_storage_forms.py)."""
    return _page(request, caller, storage.images_page(_ctx(request), caller.who, op))


@router.get("/images/{name}", response_class=HTMLResponse)
def image_detail(request: Request, name: str,
                 caller: Caller = Depends(ui_need("image.read"))) -> Response:
    return _page(request, caller, storage.image_page(_ctx(request), caller.who, name))


@router.post("/images/{name}/delete", response_class=HTMLResponse)
async def image_delete(request: Request, name: str,
                       caller: Caller = Depends(ui_need("image.delete"))) -> Response:
    """An image, or a template (then template.delete in its project too)."""
    ctx = _ctx(request)
    image = images.get(ctx, name)
    av.image_page(ctx, caller.who, name)  # 404 for one the caller may not read
    request.state.audit_project = image.project
    _check(caller, "image.delete", image.project)
    if image.template_vm:
        _check(caller, "template.delete", image.project)
        await run_in_threadpool(vm_clones.delete_template, ctx, name)
    else:
        await run_in_threadpool(images.delete, ctx, name)
    return _back("/images")


# -- users (projects, roles and role assignments: admin_access_forms.py) --------------------

@router.get("/users", response_class=HTMLResponse)
def user_list(request: Request, caller: Caller = Depends(ui_need("user.read"))) -> Response:
    return _page(request, caller, av.users_page(_ctx(request), caller.who),
                 form={"name": "", "role": "user"}, errors={})


@router.post("/users", response_class=HTMLResponse)
async def user_create(request: Request,
                      caller: Caller = Depends(ui_need("user.create"))) -> Response:
    """A local user; an error is shown next to the field it concerns."""
    ctx = _ctx(request)
    sent = await session.form(request)
    form = {"name": sent.get("name", "").strip()[:64], "role": sent.get("role", "user")[:64]}
    errors: dict[str, str] = {}
    status = 422
    try:
        req = UserCreate(name=form["name"], role=form["role"],
                         password=sent.get("password", "")[:4096] or None)
        await run_in_threadpool(users.create, ctx, req.name, req.role, req.password)
    except ValidationError as exc:
        for err in exc.errors():
            where = str(err["loc"][0]) if err["loc"] else "name"
            errors.setdefault(where if where in ("name", "role", "password") else "name",
                              str(err["msg"]).removeprefix("Value error, "))
    except CorralError as exc:
        if exc.status >= 500:
            raise
        errors[exc.field if exc.field in ("name", "role", "password") else "name"] = exc.message
        status = exc.status
    if errors:
        return _page(request, caller, av.users_page(ctx, caller.who), status=status, form=form,
                     errors=errors)
    return _back("/users")


@router.post("/users/{name}/delete", response_class=HTMLResponse)
async def user_delete(request: Request, name: str,
                      caller: Caller = Depends(ui_need("user.delete"))) -> Response:
    await run_in_threadpool(users.delete, _ctx(request), name[:64])
    return _back("/users")


# -- audit ----------------------------------------------------------------------------------

@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, user: str = "", project: str = "", action: str = "",
              before: int | None = None,
              caller: Caller = Depends(ui_need("audit.read"))) -> Response:
    wanted = av.AuditFilter(user=user.strip()[:63], project=project.strip()[:63],
                            action=action.strip()[:63])
    return _page(request, caller, av.audit_page(_ctx(request), wanted,
                                                before if before and before > 0 else None))
