"""/api/v1/vms/{name}/snapshots, .../clone, .../export-ova, /api/v1/vms/import-ova and
/api/v1/templates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from corral.api import Image, Operation
from corral.api.snapshots import (
    OvaExport,
    OvaImport,
    Snapshot,
    SnapshotCreate,
    TemplateCreate,
    VmClone,
)
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.context import EngineContext
from corral.engine.db.models import Image as ImageRow
from corral.engine.routes.deps import Project, VmName, authenticated, context, listed, need, owned, visible
from corral.engine.services import ova, vm_clones, vm_snapshots
from corral.errors import InvalidInput

TemplateName = Annotated[str, Depends(owned(ImageRow, "template"))]
router = APIRouter(tags=["vms"], dependencies=[Depends(authenticated)])
SNAPS = "/api/v1/vms/{name}/snapshots"


@router.get(SNAPS, dependencies=need("snapshot.read"), response_model=list[Snapshot])
def list_snapshots(name: VmName, ctx: EngineContext = Depends(context)) -> list[Snapshot]:
    """The VM's snapshots, oldest first; ``parent`` links make the tree."""
    return vm_snapshots.list_snapshots(ctx, name)


@router.post(SNAPS, dependencies=need("snapshot.create"), status_code=202, response_model=Operation)
def create_snapshot(name: VmName, req: SnapshotCreate,
                    ctx: EngineContext = Depends(context)) -> Operation:
    """Snapshot the disk, or disk and memory (``memory``: a running VM), live."""
    return vm_snapshots.create(ctx, name, req)


@router.post(SNAPS + "/{snapshot}/revert", dependencies=need("snapshot.revert"),
             status_code=202, response_model=Operation)
def revert_snapshot(name: VmName, snapshot: str, ctx: EngineContext = Depends(context)) -> Operation:
    """Restore the disk (and memory: the VM resumes where it was)."""
    return vm_snapshots.revert(ctx, name, snapshot)


@router.delete(SNAPS + "/{snapshot}", dependencies=need("snapshot.delete"),
               status_code=202, response_model=Operation)
def delete_snapshot(name: VmName, snapshot: str, ctx: EngineContext = Depends(context)) -> Operation:
    """Delete one snapshot; its children stay (re-parented), nothing else changes."""
    return vm_snapshots.delete(ctx, name, snapshot)


@router.post("/api/v1/vms/{name}/clone", dependencies=need("vm.create"),
             status_code=202, response_model=Operation)
def clone_vm(name: VmName, req: VmClone, project: Project,
             ctx: EngineContext = Depends(context)) -> Operation:
    """A new VM with a linked (O(1) overlay) or full copy of this VM's disk."""
    return vm_clones.clone(ctx, name, req, project)


@router.post("/api/v1/templates", dependencies=need("template.create"),
             status_code=202, response_model=Operation, tags=["images"])
def create_template(req: TemplateCreate, project: Project,
                    ctx: EngineContext = Depends(context)) -> Operation:
    """An image of the project made from a stopped VM's disk: `vm create --template NAME`
    uses it."""
    return vm_clones.create_template(ctx, req, project)


@router.get("/api/v1/templates", dependencies=need("template.read"),
            response_model=list[Image], tags=["images"])
def list_templates(projects: list[str] = Depends(listed("template.read")),
                   ctx: EngineContext = Depends(context)) -> list[Image]:
    """Images made from VMs (`template create`); `vm create --template NAME` uses them."""
    return visible(vm_clones.list_templates(ctx), projects)


@router.delete("/api/v1/templates/{name}", dependencies=need("template.delete"),
               status_code=202, response_model=Operation,
               tags=["images"])
def delete_template(name: TemplateName, ctx: EngineContext = Depends(context)) -> Operation:
    """Delete a template (refused with 409 while VMs use it)."""
    return vm_clones.delete_template(ctx, name)


@router.post("/api/v1/vms/{name}/export-ova", dependencies=need("vm.export"),
             status_code=202, response_model=Operation)
def export_ova(name: VmName, req: OvaExport, ctx: EngineContext = Depends(context)) -> Operation:
    """Write a stopped VM as an OVA (OVF 1.0 descriptor + streamOptimized VMDK) on its host."""
    return ova.export(ctx, name, req)


@router.post("/api/v1/ova-imports", dependencies=need("vm.create"), status_code=202, response_model=Operation)
def import_ova(req: OvaImport, project: Project,
               ctx: EngineContext = Depends(context)) -> Operation:
    """A VM from an OVA file: CPUs, memory, MAC from the descriptor; the disk converted.
    Into the default project only (its disks become volumes of the default pool)."""
    if project != DEFAULT_PROJECT:
        raise InvalidInput("an OVA is imported into the default project only",
                           field="project")
    return ova.import_ova(ctx, req)
