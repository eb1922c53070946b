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

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from corral.api import ImageImport, Operation, PoolCreate, VolumeCreate
from corral.api.snapshots import TemplateCreate
from corral.engine.services import images, pools, sharing, vm_clones, volumes
from corral.engine.ui import views
from corral.engine.ui.admin_common import back, check, project_form, show
from corral.engine.ui.admin_storage_views import images_page, pool_page, pools_page
from corral.engine.ui.admin_views import quote_name
from corral.engine.ui.forms import Form, same, sentence, submit, typed
from corral.engine.ui.routes import UiRoute, ctx_of, ui_need
from corral.engine.ui.session import Caller
from corral.errors import Conflict, NotFound

router = APIRouter(route_class=UiRoute, include_in_schema=False)

# the API's name (a field; a quota) -> the form's field (others: by its first)
POOL_FIELDS = same(("name", "type", "path", "ceph_conf", "ceph_pool"))
VOLUME_FIELDS = {**same(("name", "size", "format", "project")),
                 "disk": "size", "volumes": "name"}  # a volume quota's by what it counts
IMPORT_FIELDS = same(("name", "source", "format", "checksum", "project"))
TEMPLATE_FIELDS = same(("vm", "name"))


def _started(url: str, op: Operation) -> Response:
    """Back to the page, which shows the operation's progress."""
    return back(f"{url}?op={quote_name(op.id)}")


def _blank(value: str) -> str | None:
    return value or None


# -- pools ----------------------------------------------------------------------------------

@router.post("/pools", response_class=HTMLResponse)
async def pool_create(request: Request,
                      caller: Caller = Depends(ui_need("pool.create"))) -> Response:
    """A dir, shared or rbd pool, as `corral storage pool create` makes it."""
    ctx = ctx_of(request)
    form = Form(await typed(request, POOL_FIELDS))
    v = form.values
    op, status = await submit(
        form, POOL_FIELDS, "name",
        lambda: PoolCreate(name=v["name"], type=v["type"] or "dir", path=_blank(v["path"]),
                           ceph_conf=_blank(v["ceph_conf"]), ceph_pool=_blank(v["ceph_pool"])),
        lambda req: pools.create(ctx, req))
    if op is None:
        page = await run_in_threadpool(pools_page, ctx, caller.who, "", form)
        return show(request, caller, page, status)
    return _started("/pools", op)


@router.post("/pools/{name}/delete", response_class=HTMLResponse)
async def pool_delete(request: Request, name: str,
                      caller: Caller = Depends(ui_need("pool.delete"))) -> Response:
    """Refused while the pool holds volumes or root disks: said at the top of the list."""
    ctx = ctx_of(request)
    try:
        op = await run_in_threadpool(pools.delete, ctx, name[:63])
    except Conflict as exc:
        page = await run_in_threadpool(pools_page, ctx, caller.who, "", None,
                                       f"Storage pool {name} was not deleted: {exc.message}.")
        return show(request, caller, page, exc.status)
    return _started("/pools", op)


# -- volumes --------------------------------------------------------------------------------

@router.post("/pools/{name}/volumes", response_class=HTMLResponse)
async def volume_create(request: Request, name: str,
                        caller: Caller = Depends(ui_need("volume.create"))) -> Response:
    """A thin volume of one of the caller's projects (where its role may create volumes)."""
    ctx = ctx_of(request)
    pool = name[:63]  # no such pool: the service's refusal, then the page's 404
    form = await project_form(request, caller, VOLUME_FIELDS, "volume.create",
                              "create volumes in")
    v = form.values
    op, status = await submit(
        form, VOLUME_FIELDS, "name",
        lambda: VolumeCreate(name=v["name"], size=v["size"], format=_blank(v["format"])),
        lambda req: volumes.create(ctx, pool, req, v["project"]))
    if op is None:
        page = await run_in_threadpool(pool_page, ctx, caller.who, pool, "", form)
        return show(request, caller, page, status)
    return _started(f"/pools/{quote_name(pool)}", op)


@router.post("/pools/{name}/volumes/{volume}/delete", response_class=HTMLResponse)
async def volume_delete(request: Request, name: str, volume: str,
                        caller: Caller = Depends(ui_need("volume.delete"))) -> Response:
    """A volume of a project the caller may read (else 404), deleted where its role may
    (else 403); refused while attached to a VM (said at the top of the pool's page)."""
    ctx = ctx_of(request)
    pool, vol_name = name[:63], volume[:63]
    vol = await run_in_threadpool(volumes.get, ctx, pool, vol_name)
    if not views.may(caller.who, "volume.read", vol.project):
        raise NotFound(f"volume {pool}/{vol_name} not found")
    request.state.audit_project = vol.project
    check(caller, "volume.delete", vol.project)
    try:
        op = await run_in_threadpool(volumes.delete, ctx, pool, vol_name)
    except Conflict as exc:
        page = await run_in_threadpool(pool_page, ctx, caller.who, pool, "", None,
                                       f"Volume {pool}/{vol_name} was not deleted: "
                                       f"{exc.message}.")
        return show(request, caller, page, exc.status)
    return _started(f"/pools/{quote_name(pool)}", op)


# -- images and templates -------------------------------------------------------------------

@router.post("/images", response_class=HTMLResponse)
async def image_import(request: Request,
                       caller: Caller = Depends(ui_need("image.create"))) -> Response:
    """Import an image into a project, as `corral image import`: the host downloads the
    URL (or reads a file of the engine's import directories); its progress on the page."""
    ctx = ctx_of(request)
    form = await project_form(request, caller, IMPORT_FIELDS, "image.create",
                              "import images into")
    v = form.values
    op, status = await submit(
        form, IMPORT_FIELDS, "name",
        lambda: ImageImport(name=v["name"], source=v["source"], format=v["format"] or "auto",
                            checksum=_blank(v["checksum"])),
        lambda req: images.import_image(ctx, req, v["project"]))
    if op is None:
        page = await run_in_threadpool(images_page, ctx, caller.who, "", form)
        return show(request, caller, page, status)
    return _started("/images", op)


@router.post("/templates", response_class=HTMLResponse)
async def template_create(request: Request,
                          caller: Caller = Depends(ui_need("template.create"))) -> Response:
    """A template of a stopped VM, in the VM's project (`corral template create`)."""
    ctx = ctx_of(request)
    form = Form(await typed(request, TEMPLATE_FIELDS))
    v = form.values
    op: Operation | None = None
    status = 422
    try:
        vm = await run_in_threadpool(views.readable_vm, ctx, caller.who, v["vm"][:127]) \
            if v["vm"] else None
    except NotFound as exc:
        vm, status = None, exc.status
        form.errors["vm"] = sentence(exc.message)
    if vm is None:
        form.errors.setdefault("vm", "Choose a stopped VM.")
    else:
        request.state.audit_project = vm.project
        if not views.may(caller.who, "template.create", vm.project):
            form.errors["vm"] = f"You may not make templates in project {vm.project}."
            status = 403
        else:
            op, status = await submit(
                form, TEMPLATE_FIELDS, "vm", lambda: TemplateCreate(name=v["name"], vm=vm.name),
                lambda req: vm_clones.create_template(ctx, req, vm.project))
    if op is None:
        page = await run_in_threadpool(images_page, ctx, caller.who, "", None, form)
        return show(request, caller, page, status)
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
    await run_in_threadpool(sharing.set_shared, ctx_of(request), "image", name[:63], shared)
    return back(f"/images/{quote_name(name[:63])}")
