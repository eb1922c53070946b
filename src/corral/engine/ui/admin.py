"""The admin pages: hosts (maintenance, activate), networks, security groups, storage
pools and volumes, images and templates, projects and quotas, users (create, delete),
roles, the audit log. Same rules as the other pages (routes.py): one permission per
route; a project-scoped resource is checked again in its project (else 404 or 403)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from corral.api.users import UserCreate
from corral.engine.services import host_lifecycle, images, networks, users, vm_clones
from corral.engine.ui import admin_storage_views as storage
from corral.engine.ui import admin_views as av
from corral.engine.ui import session
from corral.engine.ui.admin_common import back, check, show
from corral.engine.ui.forms import Form, same, submit, typed
from corral.engine.ui.routes import UiRoute, ctx_of, ui_need
from corral.engine.ui.session import Caller

router = APIRouter(route_class=UiRoute, include_in_schema=False)
USER_FIELDS = same(("name", "role", "password"))  # the user create form's


# -- hosts ----------------------------------------------------------------------------------

@router.get("/hosts", response_class=HTMLResponse)
def host_list(request: Request, caller: Caller = Depends(ui_need("host.read"))) -> Response:
    return show(request, caller, av.hosts_page(ctx_of(request)))


@router.get("/hosts/{name}", response_class=HTMLResponse)
def host_detail(request: Request, name: str,
                caller: Caller = Depends(ui_need("host.read"))) -> Response:
    """Its facts (its memory asked of its agent now), the VMs on it, maintenance/activate."""
    return show(request, caller, av.host_page(ctx_of(request), caller.who, name))


@router.post("/hosts/{name}/maintenance", response_class=HTMLResponse)
async def host_maintenance(request: Request, name: str,
                           caller: Caller = Depends(ui_need("host.update"))) -> Response:
    """Evacuate the host (an operation; its page shows the state as it goes)."""
    await run_in_threadpool(host_lifecycle.maintenance, ctx_of(request), name)
    return back(f"/hosts/{av.quote_name(name)}")


@router.post("/hosts/{name}/activate", response_class=HTMLResponse)
async def host_activate(request: Request, name: str,
                        caller: Caller = Depends(ui_need("host.update"))) -> Response:
    await run_in_threadpool(host_lifecycle.activate, ctx_of(request), name)
    return back(f"/hosts/{av.quote_name(name)}")


# -- networks, security groups --------------------------------------------------------------

@router.get("/networks", response_class=HTMLResponse)
def network_list(request: Request,
                 caller: Caller = Depends(ui_need("network.read"))) -> Response:
    return show(request, caller, av.networks_page(ctx_of(request), caller.who))


@router.get("/networks/{name}", response_class=HTMLResponse)
def network_detail(request: Request, name: str,
                   caller: Caller = Depends(ui_need("network.read"))) -> Response:
    return show(request, caller, av.network_page(ctx_of(request), caller.who, name))


@router.post("/networks/{name}/delete", response_class=HTMLResponse)
async def network_delete(request: Request, name: str,
                         caller: Caller = Depends(ui_need("network.delete"))) -> Response:
    ctx = ctx_of(request)
    av.network_page(ctx, caller.who, name)  # 404 for one the caller may not read
    project = networks.get(ctx, name).project
    request.state.audit_project = project
    check(caller, "network.delete", project)
    await run_in_threadpool(networks.delete, ctx, name)
    return back("/networks")


@router.get("/security-groups", response_class=HTMLResponse)
def group_list(request: Request, caller: Caller = Depends(ui_need("sg.read"))) -> Response:
    return show(request, caller, av.groups_page(ctx_of(request), caller.who))


@router.get("/security-groups/{name}", response_class=HTMLResponse)
def group_detail(request: Request, name: str,
                 caller: Caller = Depends(ui_need("sg.read"))) -> Response:
    return show(request, caller, av.group_page(ctx_of(request), caller.who, name))


# -- storage --------------------------------------------------------------------------------

@router.get("/pools", response_class=HTMLResponse)
def pool_list(request: Request, op: str = "",
              caller: Caller = Depends(ui_need("pool.read"))) -> Response:
    """With *Add pool* and *Delete* (admin_storage_forms.py); ``op``: one they started."""
    return show(request, caller, storage.pools_page(ctx_of(request), caller.who, op))


@router.get("/pools/{name}", response_class=HTMLResponse)
def pool_detail(request: Request, name: str, op: str = "",
                caller: Caller = Depends(ui_need("pool.read"))) -> Response:
    return show(request, caller, storage.pool_page(ctx_of(request), caller.who, name, op))


# -- images and templates -------------------------------------------------------------------

@router.get("/images", response_class=HTMLResponse)
def image_list(request: Request, op: str = "",
               caller: Caller = Depends(ui_need("image.read"))) -> Response:
    """With *Import image* and *Make template* (admin_storage_forms.py)."""
    return show(request, caller, storage.images_page(ctx_of(request), caller.who, op))


@router.get("/images/{name}", response_class=HTMLResponse)
def image_detail(request: Request, name: str,
                 caller: Caller = Depends(ui_need("image.read"))) -> Response:
    return show(request, caller, storage.image_page(ctx_of(request), caller.who, name))


@router.post("/images/{name}/delete", response_class=HTMLResponse)
async def image_delete(request: Request, name: str,
                       caller: Caller = Depends(ui_need("image.delete"))) -> Response:
    """An image, or a template (then template.delete in its project too)."""
    ctx = ctx_of(request)
    image = images.get(ctx, name)
    av.image_page(ctx, caller.who, name)  # 404 for one the caller may not read
    request.state.audit_project = image.project
    check(caller, "image.delete", image.project)
    if image.template_vm:
        check(caller, "template.delete", image.project)
        await run_in_threadpool(vm_clones.delete_template, ctx, name)
    else:
        await run_in_threadpool(images.delete, ctx, name)
    return back("/images")


# -- users (projects, roles and role assignments: admin_access_forms.py) --------------------

@router.get("/users", response_class=HTMLResponse)
def user_list(request: Request, caller: Caller = Depends(ui_need("user.read"))) -> Response:
    return show(request, caller, av.users_page(ctx_of(request), caller.who),
                form=Form({"name": "", "role": "user"}))


@router.post("/users", response_class=HTMLResponse)
async def user_create(request: Request,
                      caller: Caller = Depends(ui_need("user.create"))) -> Response:
    """A local user; an error is shown next to the field it concerns."""
    ctx = ctx_of(request)
    form = Form(await typed(request, ("name", "role")))
    password = (await session.form(request)).get("password", "")[:4096] or None  # as typed
    _, status = await submit(
        form, USER_FIELDS, "name",
        lambda: UserCreate(name=form.values["name"], role=form.values["role"],
                           password=password),
        lambda req: users.create(ctx, req.name, req.role, req.password))
    if form.errors:
        return show(request, caller, av.users_page(ctx, caller.who), status=status, form=form)
    return back("/users")


@router.post("/users/{name}/delete", response_class=HTMLResponse)
async def user_delete(request: Request, name: str,
                      caller: Caller = Depends(ui_need("user.delete"))) -> Response:
    await run_in_threadpool(users.delete, ctx_of(request), name[:64])
    return back("/users")


# -- audit ----------------------------------------------------------------------------------

@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, user: str = "", project: str = "", action: str = "",
              before: int | None = None,
              caller: Caller = Depends(ui_need("audit.read"))) -> Response:
    wanted = av.AuditFilter(user=user.strip()[:63], project=project.strip()[:63],
                            action=action.strip()[:63])
    return show(request, caller, av.audit_page(ctx_of(request), wanted,
                                               before if before and before > 0 else None))
