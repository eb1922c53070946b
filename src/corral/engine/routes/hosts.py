"""/api/v1/hosts, /api/v1/status: the node as a whole (networks: routes/networks.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

import corral
from corral.api import Host, Operation, Status, VmState
from corral.api.evacuation import EvacuationPlan, HostMaintenance
from corral.api.hosts import HostDetail, HostPatch, HostPower
from corral.engine.context import EngineContext
from corral.engine.routes.deps import authenticated, context, need
from corral.engine.services import (
    evacuation_plan,
    host_lifecycle,
    host_power,
    host_settings,
    host_tags,
    hosts,
    images,
    vms,
)

router = APIRouter(prefix="/api/v1", tags=["hosts"], dependencies=[Depends(authenticated)])


@router.get("/hosts", dependencies=need("host.read"), response_model=list[Host])
def list_hosts(ctx: EngineContext = Depends(context)) -> list[Host]:
    return hosts.list_hosts(ctx)


@router.get("/hosts/{name}", dependencies=need("host.read"), response_model=HostDetail)
def get_host(name: str, ctx: EngineContext = Depends(context)) -> HostDetail:
    """One host, with its memory now (KSM, what balloons took back) when its agent answers."""
    return host_settings.show(ctx, name)


@router.patch("/hosts/{name}", dependencies=need("host.update"), status_code=202, response_model=Operation)
def update_host(name: str, req: HostPatch, ctx: EngineContext = Depends(context)) -> Operation:
    """Change a host: ``ksm`` turns kernel same-page merging on (identical pages of VMs are
    merged: memory overcommit) or off (merged pages are split again)."""
    return host_settings.patch(ctx, name, req)


@router.post("/hosts/{name}/maintenance", dependencies=need("host.update"),
             status_code=202, response_model=Operation, responses={
                 200: {"model": EvacuationPlan, "description": "explain=true: each VM's move "
                       "and target, or why it cannot move; nothing moves"}})
def host_maintenance(name: str, req: HostMaintenance | None = None,
                     explain: bool = Query(False, description="A dry run: answer the plan "
                                           "of the evacuation (200), move nothing"),
                     ctx: EngineContext = Depends(context)) -> Operation | JSONResponse:
    """Evacuate a host, then keep new VMs off it until ``activate`` (whatever its agent
    does): running VMs move by live migration (or stop, move, start for evacuation mode
    auto when they cannot move live), stopped ones have their definition moved, those of
    mode stop are stopped and stay; targets follow every placement rule. 409 naming each VM
    that cannot move (nothing moves; ``force``: they stay, listed), or from a state it is
    not allowed from. Cancelling the operation stops the evacuation: the host is up again,
    what moved stays moved."""
    if explain:  # every VM on the host is named: the admins' view (host.update), not a read
        return JSONResponse(evacuation_plan.plan(ctx, name).model_dump(mode="json"))
    return host_lifecycle.maintenance(ctx, name, force=req.force if req else False)


@router.post("/hosts/{name}/reboot", dependencies=need("host.update"), status_code=202,
             response_model=Operation)
def host_reboot(name: str, req: HostPower | None = None,
                ctx: EngineContext = Depends(context)) -> Operation:
    """Empty the host (as ``maintenance``, ``force`` included), then reboot its machine;
    ``return_vms``: once it is back, activate it and bring back the VMs that moved off.
    409 for a host whose agent cannot be asked (not up nor in maintenance)."""
    req = req or HostPower()
    return host_power.submit(ctx, name, "reboot", req.return_vms, req.force)


@router.post("/hosts/{name}/shutdown", dependencies=need("host.update"), status_code=202,
             response_model=Operation)
def host_shutdown(name: str, req: HostPower | None = None,
                  ctx: EngineContext = Depends(context)) -> Operation:
    """Empty the host (as ``maintenance``), then power its machine off; it stays in
    maintenance. ``return_vms`` is for a reboot only (409)."""
    req = req or HostPower()
    return host_power.submit(ctx, name, "shutdown", req.return_vms, req.force)


@router.post("/hosts/{name}/activate", dependencies=need("host.update"),
             status_code=202, response_model=Operation)
def host_activate(name: str, ctx: EngineContext = Depends(context)) -> Operation:
    """Take a host out of maintenance: its agent must answer (its facts are read anew)."""
    return host_lifecycle.activate(ctx, name)


@router.delete("/hosts/{name}", dependencies=need("host.delete"), status_code=202, response_model=Operation)
def remove_host(name: str, force: bool = False,
                ctx: EngineContext = Depends(context)) -> Operation:
    """Forget a host (its certificate is no longer accepted). 409 while VMs are defined on
    it, naming them; ``force`` (only for a host that is unresponsive or down) keeps its VMs
    as ``unknown``, on no host, and restarts none of them."""
    return host_lifecycle.remove(ctx, name, force)


@router.put("/hosts/{name}/tags/{tag}", dependencies=need("host.update"), response_model=Host)
def add_tag(name: str, tag: str, ctx: EngineContext = Depends(context)) -> Host:
    """Tag a host (lowercase a-z, 0-9, '-', '_', '.'; at most 63): VMs created with
    ``host_tags`` go only to hosts with every one of them. Idempotent."""
    return host_tags.set_tag(ctx, name, tag, present=True)


@router.delete("/hosts/{name}/tags/{tag}", dependencies=need("host.update"), response_model=Host)
def remove_tag(name: str, tag: str, ctx: EngineContext = Depends(context)) -> Host:
    """Take a tag off a host (VMs already on it stay). Idempotent."""
    return host_tags.set_tag(ctx, name, tag, present=False)


@router.get("/status", dependencies=need("status.read"), response_model=Status)
def status(ctx: EngineContext = Depends(context)) -> Status:
    all_vms = vms.list_vms(ctx)
    return Status(
        version=corral.__version__, hosts=hosts.list_hosts(ctx), vms=len(all_vms),
        running_vms=sum(1 for v in all_vms if v.state == VmState.RUNNING),
        images=len(images.list_images(ctx)), data_dir=str(ctx.settings.data_dir),
    )
