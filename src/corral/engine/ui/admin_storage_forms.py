"""The storage and image admin pages' actions: add and delete a storage pool, create and
delete a volume, import an image, make a template of a stopped VM, share an image with
every project (or stop).

Same rules as the other pages (routes.py): one permission per route, the API's; a
project-scoped object is checked again in its project (another project's is a 404, a role
that may not act there a 403). All but sharing start an operation: the browser goes back
to the page with ``?op=ID``, which shows its progress. Bad input comes back as the page
with the error next to its field and what was typed kept; the engine's refusal of a
delete (a pool in use, an attached volume) at the top of the page."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from corral.api import ImageImport, Operation, PoolCreate, VolumeCreate
from corral.api.snapshots import TemplateCreate
from corral.engine.context import EngineContext
from corral.engine.services import images, pools, sharing, vm_clones, volumes
from corral.engine.ui import admin_views as av
from corral.engine.ui import session, views
from corral.engine.ui.admin_storage_views import (
    Form,
    images_page,
    pool_page,
    pools_page,
    volume_projects,
)
from corral.engine.ui.routes import UiRoute, render, ui_need
from corral.engine.ui.session import Caller
from corral.errors import Conflict, CorralError, Forbidden, NotFound

router = APIRouter(route_class=UiRoute, include_in_schema=False)

POOL_FIELDS = ("name", "type", "path", "ceph_conf", "ceph_pool")
VOLUME_FIELDS = ("name", "size", "format", "project")
IMPORT_FIELDS = ("name", "source", "format", "checksum", "project")
TEMPLATE_FIELDS = ("vm", "name")
QUOTA_FIELD = {"disk": "size", "volumes": "name"}  # a volume quota's by what it counts


def _ctx(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.ctx
    return ctx


def _page(request: Request, caller: Caller, page: av.Page, status: int = 200) -> Response:
    return render(request, "admin.html", caller, status=status, page=page.nav, p=page)


def _started(url: str, op: Operation) -> Response:
    """Back to the page, which shows the operation's progress."""
    return RedirectResponse(f"{url}?op={quote(op.id)}", status_code=303)


async def _typed(request: Request, fields: tuple[str, ...]) -> dict[str, str]:
    sent = await session.form(request)
    return {k: sent.get(k, "").strip()[:4096] for k in fields}


def _check(caller: Caller, permission: str, project: str) -> None:
    if not views.may(caller.who, permission, project):
        raise Forbidden(f"your role in project {project} does not allow this ({permission})",
                        permission=permission)


def _invalid(exc: ValidationError, fields: tuple[str, ...]) -> dict[str, str]:
    """Pydantic's errors by form field: its ``loc``, else (a check of the whole request)
    the first field its message names, else the first field."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = str(err["loc"][0]) if err["loc"] else ""
        if where not in fields:
            named = sorted((msg.find(f), f) for f in fields if f in msg)
            where = named[0][1] if named else fields[0]
        errors.setdefault(where, msg)
    return errors


def _refused(exc: CorralError, fields: tuple[str, ...],
             by_field: Mapping[str, str] | None = None) -> dict[str, str]:
    """The engine's refusal next to the field it names, or ``by_field`` maps it (or the
    quota it names) to; the first field when none. A failure of the engine itself (but a
    host's, 502) is its error page."""
    if exc.status >= 500 and exc.status != 502:
        raise exc
    named = exc.field or ""
    quota = exc.details.get("quota")
    key = quota if isinstance(quota, str) and quota in (by_field or {}) else named
    where = (by_field or {}).get(key, named)
    return {where if where in fields else fields[0]: exc.message}


async def _submit(make: Callable[[], BaseModel], call: Callable[[Any], Operation],
                  fields: tuple[str, ...], form: Form,
                  by_field: Mapping[str, str] | None = None) -> tuple[Operation | None, int]:
    """Build the request from the form, then ask the service (in a worker: it may call an
    agent); the operation, or None with the form's errors set and the page's status."""
    try:
        req = make()
    except ValidationError as exc:
        form.errors.update(_invalid(exc, fields))
        return None, 422
    try:
        return await run_in_threadpool(call, req), 200
    except CorralError as exc:
        form.errors.update(_refused(exc, fields, by_field))
        return None, exc.status


def _blank(value: str) -> str | None:
    return value or None


# -- pools ----------------------------------------------------------------------------------

@router.post("/pools", response_class=HTMLResponse)
async def pool_create(request: Request,
                      caller: Caller = Depends(ui_need("pool.create"))) -> Response:
    """A dir, shared or rbd pool, as `corral storage pool create` makes it."""
    ctx = _ctx(request)
    form = Form(await _typed(request, POOL_FIELDS))
    v = form.values
    op, status = await _submit(
        lambda: PoolCreate(name=v["name"], type=v["type"] or "dir", path=_blank(v["path"]),
                           ceph_conf=_blank(v["ceph_conf"]), ceph_pool=_blank(v["ceph_pool"])),
        lambda req: pools.create(ctx, req), POOL_FIELDS, form)
    if op is None:
        page = await run_in_threadpool(pools_page, ctx, caller.who, "", form)
        return _page(request, caller, page, status)
    return _started("/pools", op)


@router.post("/pools/{name}/delete", response_class=HTMLResponse)
async def pool_delete(request: Request, name: str,
                      caller: Caller = Depends(ui_need("pool.delete"))) -> Response:
    """Refused while the pool holds volumes or root disks: said at the top of the list."""
    ctx = _ctx(request)
    try:
        op = await run_in_threadpool(pools.delete, ctx, name[:63])
    except Conflict as exc:
        page = await run_in_threadpool(pools_page, ctx, caller.who, "", None,
                                       f"Storage pool {name} was not deleted: {exc.message}.")
        return _page(request, caller, page, exc.status)
    return _started("/pools", op)


# -- volumes --------------------------------------------------------------------------------

@router.post("/pools/{name}/volumes", response_class=HTMLResponse)
async def volume_create(request: Request, name: str,
                        caller: Caller = Depends(ui_need("volume.create"))) -> Response:
    """A thin volume of one of the caller's projects (where its role may create volumes)."""
    ctx = _ctx(request)
    pool = name[:63]  # no such pool: the service's refusal, then the page's 404
    form = Form(await _typed(request, VOLUME_FIELDS))
    v = form.values
    request.state.audit_project = v["project"] or None
    op: Operation | None = None
    status = 422
    if v["project"] not in await run_in_threadpool(volume_projects, ctx, caller.who):
        form.errors["project"] = (f"You may not create volumes in project {v['project']}."
                                  if v["project"] else "Choose a project.")
    else:
        op, status = await _submit(
            lambda: VolumeCreate(name=v["name"], size=v["size"], format=_blank(v["format"])),
            lambda req: volumes.create(ctx, pool, req, v["project"]), VOLUME_FIELDS, form,
            QUOTA_FIELD)
    if op is None:
        page = await run_in_threadpool(pool_page, ctx, caller.who, pool, "", form)
        return _page(request, caller, page, status)
    return _started(f"/pools/{quote(pool, safe='')}", op)


@router.post("/pools/{name}/volumes/{volume}/delete", response_class=HTMLResponse)
async def volume_delete(request: Request, name: str, volume: str,
                        caller: Caller = Depends(ui_need("volume.delete"))) -> Response:
    """A volume of a project the caller may read (else 404), deleted where its role may
    (else 403); refused while attached to a VM (said at the top of the pool's page)."""
    ctx = _ctx(request)
    pool, vol_name = name[:63], volume[:63]
    vol = await run_in_threadpool(volumes.get, ctx, pool, vol_name)
    if not views.may(caller.who, "volume.read", vol.project):
        raise NotFound(f"volume {pool}/{vol_name} not found")
    request.state.audit_project = vol.project
    _check(caller, "volume.delete", vol.project)
    try:
        op = await run_in_threadpool(volumes.delete, ctx, pool, vol_name)
    except Conflict as exc:
        page = await run_in_threadpool(pool_page, ctx, caller.who, pool, "", None,
                                       f"Volume {pool}/{vol_name} was not deleted: "
                                       f"{exc.message}.")
        return _page(request, caller, page, exc.status)
    return _started(f"/pools/{quote(pool, safe='')}", op)


# -- images and templates -------------------------------------------------------------------

@router.post("/images", response_class=HTMLResponse)
async def image_import(request: Request,
                       caller: Caller = Depends(ui_need("image.create"))) -> Response:
    """Import an image into a project, as `corral image import`: the host downloads the
    URL (or reads a file of the engine's import directories); its progress on the page."""
    ctx = _ctx(request)
    form = Form(await _typed(request, IMPORT_FIELDS))
    v = form.values
    request.state.audit_project = v["project"] or None
    op: Operation | None = None
    status = 422
    if v["project"] not in await run_in_threadpool(
            views.projects_with, ctx, caller.who, "image.create"):
        form.errors["project"] = (f"You may not import images into project {v['project']}."
                                  if v["project"] else "Choose a project.")
    else:
        op, status = await _submit(
            lambda: ImageImport(name=v["name"], source=v["source"], format=v["format"] or "auto",
                                checksum=_blank(v["checksum"])),
            lambda req: images.import_image(ctx, req, v["project"]), IMPORT_FIELDS, form)
    if op is None:
        page = await run_in_threadpool(images_page, ctx, caller.who, "", form)
        return _page(request, caller, page, status)
    return _started("/images", op)


@router.post("/templates", response_class=HTMLResponse)
async def template_create(request: Request,
                          caller: Caller = Depends(ui_need("template.create"))) -> Response:
    """A template of a stopped VM, in the VM's project (`corral template create`)."""
    ctx = _ctx(request)
    form = Form(await _typed(request, TEMPLATE_FIELDS))
    v = form.values
    op: Operation | None = None
    status = 422
    try:
        vm = await run_in_threadpool(views.readable_vm, ctx, caller.who, v["vm"][:127]) \
            if v["vm"] else None
    except NotFound as exc:
        vm, status = None, exc.status
        form.errors["vm"] = exc.message
    if vm is None:
        form.errors.setdefault("vm", "Choose a stopped VM.")
    else:
        request.state.audit_project = vm.project
        if not views.may(caller.who, "template.create", vm.project):
            form.errors["vm"] = f"You may not make templates in project {vm.project}."
            status = 403
        else:
            op, status = await _submit(
                lambda: TemplateCreate(name=v["name"], vm=vm.name),
                lambda req: vm_clones.create_template(ctx, req, vm.project),
                TEMPLATE_FIELDS, form)
    if op is None:
        page = await run_in_threadpool(images_page, ctx, caller.who, "", None, form)
        return _page(request, caller, page, status)
    return _started("/images", op)


@router.post("/images/{name}/share", response_class=HTMLResponse)
async def image_share(request: Request, name: str,
                      caller: Caller = Depends(ui_need("project.update"))) -> Response:
    """Every project may then use the image (not change or delete it)."""
    return await _set_shared(request, name, True)


@router.post("/images/{name}/unshare", response_class=HTMLResponse)
async def image_unshare(request: Request, name: str,
                        caller: Caller = Depends(ui_need("project.update"))) -> Response:
    return await _set_shared(request, name, False)


async def _set_shared(request: Request, name: str, shared: bool) -> Response:
    await run_in_threadpool(sharing.set_shared, _ctx(request), "image", name[:63], shared)
    return RedirectResponse(f"/images/{quote(name[:63], safe='')}", status_code=303)
