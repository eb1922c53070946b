"""`host maintenance`, `host activate` and `host remove`: operations under the host's lock
(``host:NAME``, as `host set`), checked at once (a clear 409) and again under the lock.

Maintenance evacuates the host first (its VMs move to other hosts: host_evacuation.py),
and the scheduler places nothing on a host that is not up.

Removing a host forgets it: its row goes, and with it the one client certificate the engine
took from it (``hosts.cert_fingerprint``), so the row going is the revocation. What is that
host's alone goes with it (its ``dir`` pools and their volume rows: the files stay on that
host's disk); what the cluster shares (networks, shared and rbd pools, images, security
groups) stays. A host with VMs defined on it is refused; ``force`` is for a dead host only
(unresponsive or down): its VMs stay as ``unknown`` rows with no host, and nothing restarts
them anywhere.
"""

from __future__ import annotations

from typing import Any

from corral.api import HostState, Operation, VmState
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host, StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.services import host_evacuation, host_states, host_sync, hosts, networks
from corral.engine.services.host_states import FORCE_REMOVABLE, HostAction
from corral.errors import Conflict, NotFound, WrongState

_SHOWN = 10  # VM names a refusal lists before "..."


def _find(ctx: EngineContext, name: str) -> tuple[str, HostState, list[str]]:
    """(id, state, names of the VMs defined on it) of host ``name``; 404 if none."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            raise NotFound(f"host {name} not found (`corral host list`)", field="name")
        vms = sorted(n for (n,) in s.query(Vm.name).filter(Vm.host_id == host.id))
        return host.id, HostState(host.status), vms


def _submit(ctx: EngineContext, kind: str, name: str, host_id: str,
            params: dict[str, Any], locks: list[str] | None = None) -> Operation:
    return ctx.ops.submit(f"host.{kind}", {"hosts": [name]}, {"host_id": host_id, **params},
                          [f"host:{name}", *(locks or [])], host_id=host_id)


# -- maintenance and activate -------------------------------------------------------------

def maintenance(ctx: EngineContext, name: str, force: bool = False) -> Operation:
    """Evacuate the host, then keep new VMs off it (corral.engine.services.host_evacuation)."""
    return host_evacuation.maintenance(ctx, name, force)


def activate(ctx: EngineContext, name: str) -> Operation:
    host_id, state, _ = _find(ctx, name)
    host_states.target(name, state, HostAction.ACTIVATE)
    return _submit(ctx, "activate", name, host_id, {"name": name})


def execute_activate(ctx: EngineContext, op: OpContext) -> None:
    """Its agent must answer first (its facts are read anew: the host may have changed
    while it was worked on); one that does not stays in maintenance, the error says why."""
    host_id = op.params["host_id"]
    op.progress(20, "asking its agent")
    hosts.refresh_facts(ctx, host_id)
    host_states.move(ctx, host_id, HostAction.ACTIVATE, "host activate")
    op.progress(100, f"host {op.params['name']} is up: it takes new VMs again")


# -- remove --------------------------------------------------------------------------------

def _refuse(name: str, state: HostState, vms: list[str], force: bool) -> None:
    if not vms:
        return
    shown = ", ".join(vms[:_SHOWN]) + (" ..." if len(vms) > _SHOWN else "")
    if not force:
        raise Conflict(f"host {name} has {len(vms)} VM(s) defined on it: {shown}; delete or "
                       "move them first (`--force` forgets them on a dead host)",
                       field="name", vms=vms)
    if state not in FORCE_REMOVABLE:
        raise WrongState(f"host {name} is {state}: --force is only for a host that is not "
                         f"up ({', '.join(FORCE_REMOVABLE)}); its {len(vms)} VM(s) still "
                         f"run there: {shown}", field="force", state=state.value, vms=vms)


def remove(ctx: EngineContext, name: str, force: bool = False) -> Operation:
    host_id, state, vms = _find(ctx, name)
    _refuse(name, state, vms, force)
    # Its VMs' locks too: no operation may be working on one while it is made `unknown`.
    return _submit(ctx, "remove", name, host_id, {"name": name, "force": force},
                   [f"vm:{v}" for v in vms])


def execute_remove(ctx: EngineContext, op: OpContext) -> None:
    host_id, name, force = op.params["host_id"], op.params["name"], bool(op.params["force"])
    orphans: list[str] = []
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            op.progress(100, f"host {name} was already removed")
            return
        claims.hold(s, host)  # no VM is placed on it between the check and the delete
        vms = s.query(Vm).filter(Vm.host_id == host_id).order_by(Vm.name).all()
        _refuse(name, HostState(host.status), [v.name for v in vms], force)
        pools = s.query(StoragePool).filter(StoragePool.host_id == host_id).all()
        pool_ids = [p.id for p in pools]
        for vm in vms:  # force: a dead host's VMs stay known, as unknown and nowhere
            vm.host_id, vm.state = None, VmState.UNKNOWN.value
            if vm.root_pool_id in pool_ids:
                vm.root_pool_id = None  # that disk was on the removed host
            orphans.append(vm.name)
        if pool_ids:
            s.query(Volume).filter(Volume.pool_id.in_(pool_ids)).delete(
                synchronize_session=False)
        for pool in pools:
            s.delete(pool)
        s.flush()
        networks.forget_server(s, host_id)  # peers_changed below: another host serves
        s.delete(host)
        pool_names = sorted(p.name for p in pools)
    ctx.forget_agent(host_id)
    # The other hosts stop flooding overlay traffic to it (and one of them may now serve
    # an overlay network it served); a host that fails is only named.
    left = host_sync.peers_changed(ctx)
    for vm_name in orphans:
        ctx.bus.publish("vm", {"name": vm_name, "state": VmState.UNKNOWN.value,
                               "message": f"its host {name} was removed"})
    ctx.bus.publish("host", {"name": name, "status": "removed",
                             "reason": "host remove" + (" --force" if force else "")})
    parts = [f"host {name} removed"]
    if orphans:
        parts.append(f"{len(orphans)} VM(s) now unknown: {', '.join(orphans[:_SHOWN])}")
    if pool_names:
        parts.append(f"its pools forgotten (files left on the host): {', '.join(pool_names)}")
    if left:
        parts.append("; ".join(left))
    op.progress(100, "; ".join(parts))


def register(ctx: EngineContext) -> None:
    host_evacuation.register(ctx)  # host.maintenance
    ctx.ops.register("host.activate", lambda op: execute_activate(ctx, op))
    ctx.ops.register("host.remove", lambda op: execute_remove(ctx, op))
