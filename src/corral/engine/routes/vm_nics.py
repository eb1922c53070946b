"""/api/v1/vms/{name}/nics: a VM's NICs (hot-plugged when it runs), static IPs."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api import NicCreate, NicUpdate, Operation, VmNic
from corral.engine.context import EngineContext
from corral.engine.routes.deps import VmName, authenticated, context, need
from corral.engine.services import vm_nics

router = APIRouter(prefix="/api/v1/vms/{name}/nics", tags=["vms"],
                   dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("vm.read"), response_model=list[VmNic])
def list_nics(name: VmName, ctx: EngineContext = Depends(context)) -> list[VmNic]:
    """The VM's NICs in order (the first is the one made with the VM)."""
    return vm_nics.list_nics(ctx, name)


@router.post("", dependencies=need("network.attach"), status_code=202, response_model=Operation)
def add_nic(name: VmName, req: NicCreate, ctx: EngineContext = Depends(context)) -> Operation:
    """Add a NIC on a network (optional MAC, optional static IP); a running VM gets it at once."""
    return vm_nics.add(ctx, name, req)


@router.delete("/{mac}", dependencies=need("vm.update"), status_code=202, response_model=Operation)
def remove_nic(name: VmName, mac: str, ctx: EngineContext = Depends(context)) -> Operation:
    """Remove a NIC (not the first); a running VM's guest releases it first."""
    return vm_nics.remove(ctx, name, mac)


@router.patch("/{mac}", dependencies=need("vm.update"), response_model=VmNic)
def update_nic(name: VmName, mac: str, req: NicUpdate, ctx: EngineContext = Depends(context)) -> VmNic:
    """Change a NIC's security groups, applied live (before the answer) on its host."""
    return vm_nics.update(ctx, name, mac, req)
