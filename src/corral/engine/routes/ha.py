"""/api/v1/ha: high availability's state (`corral ha status`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from corral.agent_api.reports import LeaseState
from corral.api.ha import CorosyncConf, HaHost, HaStatus, HaVm
from corral.engine.context import EngineContext
from corral.engine.ha_loop import HaLoop
from corral.engine.routes.deps import context, need
from corral.engine.services import ha_corosync

router = APIRouter(prefix="/api/v1/ha", tags=["ha"])


def _ha(request: Request) -> HaLoop:
    ha: HaLoop = request.app.state.ha
    return ha


@router.get("", response_model=HaStatus, dependencies=need("cluster.read"))
def ha_status(ha: HaLoop = Depends(_ha)) -> HaStatus:
    """Hosts with their HA state (silence, fencing, quorum) and the HA VMs with where their
    rows say they are, highest priority first, and why any waits to run again."""
    r = ha.peek()
    d, view = r.decision, r.view
    hosts = [HaHost(name=h.name, state=d.hosts.get(h.name, ""),
                    silent_s=round(view.now - h.last_heard, 1), fence=h.fence.value,
                    fence_configured=h.fence_configured, quorum=h.quorum.value,
                    lease=_lease_words(r.leases.get(h.name)))
             for h in sorted(view.hosts, key=lambda h: h.name)]
    vms = [HaVm(name=v.name, host=r.vm_hosts.get(v.name), priority=v.priority,
                wants_running=v.wants_running, waiting=d.waiting.get(v.name),
                recovering=v.busy)
           for v in sorted(view.vms, key=lambda v: (-v.priority, v.name))]
    return HaStatus(detect_s=view.settings.detect_s, lease_s=view.settings.lease_s,
                    hosts=hosts, vms=vms)


@router.get("/corosync-conf", response_model=CorosyncConf, dependencies=need("cluster.read"))
def corosync_conf(cluster_name: str = Query("corral", max_length=32),
                  ctx: EngineContext = Depends(context)) -> CorosyncConf:
    """The corosync.conf of the cluster's hosts, the same for every host (votequorum over
    knet, token 1000 ms; two_node with two hosts)."""
    return ha_corosync.render(ctx, cluster_name)


def _lease_words(lease: LeaseState | None) -> str:
    if lease is None:
        return "none"
    if lease.self_fenced:
        return "self-fenced"
    if not lease.armed:
        return "not armed"
    return f"armed, {max(0.0, lease.left_s):.1f} s left"
