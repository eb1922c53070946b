"""/api/v1/vms/{name}/disks: volumes attached to a VM (hot-plugged when it runs)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api import DiskAttach, Operation, VmDisk, VolumeResize
from corral.engine.context import EngineContext
from corral.engine.routes.deps import VmName, authenticated, context, need
from corral.engine.services import vm_disks, vm_root_disk

router = APIRouter(prefix="/api/v1/vms/{name}/disks", tags=["vms"],
                   dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("vm.read"), response_model=list[VmDisk])
def list_disks(name: VmName, ctx: EngineContext = Depends(context)) -> list[VmDisk]:
    """Root disk, cloud-init seed and attached volumes."""
    return vm_disks.list_disks(ctx, name)


@router.post("", dependencies=need("vm.update"), status_code=202, response_model=Operation)
def attach_disk(name: VmName, req: DiskAttach, ctx: EngineContext = Depends(context)) -> Operation:
    """Attach a volume (POOL/NAME); a running VM gets it at once (virtio or scsi bus)."""
    return vm_disks.attach(ctx, name, req)


@router.delete("/{pool}/{volume}", dependencies=need("vm.update"), status_code=202, response_model=Operation)
def detach_disk(name: VmName, pool: str, volume: str,
                ctx: EngineContext = Depends(context)) -> Operation:
    """Detach a volume; a running VM's guest releases it first."""
    return vm_disks.detach(ctx, name, f"{pool}/{volume}")


@router.post("/root/resize", dependencies=need("vm.update"), status_code=202, response_model=Operation)
def resize_root_disk(name: VmName, req: VolumeResize,
                     ctx: EngineContext = Depends(context)) -> Operation:
    """Grow the VM's root disk (only grows): live on a running VM (the guest sees it at
    once), else on its host. Attached volumes grow with the volume's own resize."""
    return vm_root_disk.grow(ctx, name, req)
