"""/api/v1/hosts, /api/v1/status: the node as a whole (networks: routes/networks.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

import corral
from corral.api import Host, Operation, Status, VmState
from corral.api.hosts import HostDetail, HostPatch
from corral.engine.context import EngineContext
from corral.engine.routes.deps import authenticated, context
from corral.engine.services import host_settings, hosts, images, vms

router = APIRouter(prefix="/api/v1", tags=["hosts"], dependencies=[Depends(authenticated)])


@router.get("/hosts", response_model=list[Host])
def list_hosts(ctx: EngineContext = Depends(context)) -> list[Host]:
    return hosts.list_hosts(ctx)


@router.get("/hosts/{name}", response_model=HostDetail)
def get_host(name: str, ctx: EngineContext = Depends(context)) -> HostDetail:
    """One host, with its memory now (KSM, what balloons took back) when its agent answers."""
    return host_settings.show(ctx, name)


@router.patch("/hosts/{name}", status_code=202, response_model=Operation)
def update_host(name: str, req: HostPatch, ctx: EngineContext = Depends(context)) -> Operation:
    """Change a host: ``ksm`` turns kernel same-page merging on (identical pages of VMs are
    merged: memory overcommit) or off (merged pages are split again)."""
    return host_settings.patch(ctx, name, req)


@router.get("/status", response_model=Status)
def status(ctx: EngineContext = Depends(context)) -> Status:
    all_vms = vms.list_vms(ctx)
    return Status(
        version=corral.__version__, hosts=hosts.list_hosts(ctx), vms=len(all_vms),
        running_vms=sum(1 for v in all_vms if v.state == VmState.RUNNING),
        images=len(images.list_images(ctx)), data_dir=str(ctx.settings.data_dir),
    )
