"""/api/v1/vms/{name}/stats and /api/v1/hosts/{name}/stats: recent CPU, memory, disk and
network use (the web UI's graphs, ``corral vm stats``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from corral.api.stats import Stats
from corral.engine.context import EngineContext
from corral.engine.routes.deps import VmName, authenticated, context, need
from corral.engine.services import stats

router = APIRouter(prefix="/api/v1", tags=["stats"], dependencies=[Depends(authenticated)])

Since = Query(None, ge=0, description="Only points after this unix time (a poller passes "
              "its newest point's time)")


@router.get("/vms/{name}/stats", dependencies=need("vm.read"), response_model=Stats)
def vm_stats(name: VmName, since: float | None = Since,
             ctx: EngineContext = Depends(context)) -> Stats:
    """The VM's CPU %, memory, disk and network bytes/s of the last 10 minutes, as series
    of ``[unix time, value]`` (empty while it runs nowhere)."""
    return stats.vm_stats(ctx, name, since)


@router.get("/hosts/{name}/stats", dependencies=need("host.read"), response_model=Stats)
def host_stats(name: str, since: float | None = Since,
               ctx: EngineContext = Depends(context)) -> Stats:
    """The host's CPU % and its VMs' memory, disk and network of the last 10 minutes."""
    return stats.host_stats(ctx, name, since)
