"""What the storage and image admin pages offer beyond their lists (admin_views): the forms
to add a pool, create a volume, import an image or make a template, the Delete buttons
(each with a confirmation naming the object), the progress of the operation a form just
started, and a refusal of the engine (a pool in use) said at the top of the page.

The forms' values and errors travel in ``Page.values`` (the page's ``extra`` template
draws them); the routes that post them are in admin_storage_forms.py."""

from __future__ import annotations

from corral.api import Operation, PoolType, VmState, VolumeFormat
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.context import EngineContext
from corral.engine.services import images, vms
from corral.engine.services.auth import Principal
from corral.engine.ui import admin_views as av
from corral.engine.ui import views
from corral.engine.ui.forms import Form
from corral.errors import NotFound

DEFAULT_POOL = "default"  # holds the host's images and root disks: the API never deletes it
IMAGE_FORMATS = ("auto", "qcow2", "raw", "vmdk", "vdi", "iso")  # ImageImport.format
TEMPLATE_FROM = {VmState.STOPPED, VmState.CRASHED}  # vm_clones: a template needs these


def _operation(ctx: EngineContext, who: Principal, op_id: str) -> Operation | None:
    """The operation a form just started (``?op=``), if the caller may read it."""
    if not op_id or len(op_id) > 36:
        return None
    try:
        return views.readable_operation(ctx, who, op_id)
    except NotFound:
        return None


def _columns(table: av.Table) -> dict[str, int]:
    return {name: i for i, name in enumerate(table.columns)}


def _table(page: av.Page, ident: str) -> av.Table | None:
    return next((t for t in page.tables if t.ident == ident), None)


def _first(projects: list[str]) -> str:
    """The project a form offers first: ``default`` when the caller may use it."""
    return DEFAULT_PROJECT if DEFAULT_PROJECT in projects else (projects[0] if projects else "")


# -- pools ----------------------------------------------------------------------------------

def pools_page(ctx: EngineContext, who: Principal, op_id: str = "", form: Form | None = None,
               refusal: str = "") -> av.Page:
    """The pools with *Add pool* (pool.create) and *Delete* (pool.delete; not the default
    pool, which the API never deletes: a pool in use is refused, said at the top)."""
    page = av.pools_page(ctx)
    table = _table(page, "pools")
    if table is not None and views.may(who, "pool.delete"):
        table.actions = [
            [] if row[0].text == DEFAULT_POOL else
            [av.Action("Delete", f"/pools/{av.quote_name(row[0].text)}/delete",
                       f"Delete storage pool {row[0].text}? Refused while it holds volumes "
                       "or VM root disks; the data in it is never removed.", danger=True)]
            for row in table.rows]
    page.extra = "_pool_forms.html"
    page.values = {"form": form or Form({"type": PoolType.DIR.value}),
                   "types": [t.value for t in PoolType], "op": _operation(ctx, who, op_id),
                   "refusal": refusal}
    return page


# -- a pool's volumes -----------------------------------------------------------------------

def volume_projects(ctx: EngineContext, who: Principal) -> list[str]:
    """The projects the caller may create volumes in (the form's choices)."""
    return views.projects_with(ctx, who, "volume.create")


def pool_page(ctx: EngineContext, who: Principal, name: str, op_id: str = "",
              form: Form | None = None, refusal: str = "") -> av.Page:
    """A pool's volumes with *Create volume* (volume.create in a project) and *Delete* on
    each unattached volume of a project where the role may delete volumes."""
    page = av.pool_page(ctx, who, name)
    table = _table(page, "volumes")
    if table is not None:
        col = _columns(table)
        base = f"/pools/{av.quote_name(name)}/volumes"
        table.actions = [
            [av.Action("Delete", f"{base}/{av.quote_name(row[0].text)}/delete",
                       f"Delete volume {name}/{row[0].text}? The data on it is lost.",
                       danger=True)]
            if row[col["Attached to"]].text == av.DASH
            and views.may(who, "volume.delete", row[col["Project"]].text) else []
            for row in table.rows]
    projects = volume_projects(ctx, who)
    state = dict(page.facts).get("State")
    default = _first(projects)
    page.extra = "_volume_forms.html"
    page.values = {"form": form or Form({"project": default}), "projects": projects,
                   "formats": [f.value for f in VolumeFormat], "pool": name,
                   "ready": state == "ready", "op": _operation(ctx, who, op_id),
                   "refusal": refusal}
    return page


# -- images and templates -------------------------------------------------------------------

def template_sources(ctx: EngineContext, who: Principal) -> list[tuple[str, str]]:
    """The stopped VMs the caller may make a template of: (full name, what the list says)."""
    found = vms.list_vms(ctx, views.projects_with(ctx, who, "template.create"))
    return [(views.vm_full_name(v), f"{v.name} (project {v.project})")
            for v in found if v.state in TEMPLATE_FROM]


def images_page(ctx: EngineContext, who: Principal, op_id: str = "",
                form: Form | None = None, template: Form | None = None,
                refusal: str = "") -> av.Page:
    """Images and templates with *Import image* (image.create in a project: a URL the host
    downloads, an operation with its progress here) and *Make template* of a stopped VM
    (template.create in its project)."""
    page = av.images_page(ctx, who)
    projects = views.projects_with(ctx, who, "image.create")
    default = _first(projects)
    page.extra = "_image_forms.html"
    page.values = {"form": form or Form({"project": default, "format": "auto"}),
                   "template": template or Form(), "projects": projects,
                   "formats": IMAGE_FORMATS, "sources": template_sources(ctx, who),
                   "op": _operation(ctx, who, op_id), "refusal": refusal}
    return page


def image_page(ctx: EngineContext, who: Principal, name: str) -> av.Page:
    """An image's page with *Share with every project* or *Stop sharing* for a role that
    may (project.update, engine-wide, as the API's ``PUT /images/NAME/shared``)."""
    page = av.image_page(ctx, who, name)
    if views.may(who, "project.update"):
        url = f"/images/{av.quote_name(name)}"
        page.actions.insert(0, av.Action(
            "Stop sharing", f"{url}/unshare", f"Stop sharing {name} with every project? "
            "VMs of other projects made from it keep it; no new ones can be.")
            if images.get(ctx, name).shared else
            av.Action("Share with every project", f"{url}/share"))
    return page
