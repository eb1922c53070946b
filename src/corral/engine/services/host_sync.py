"""A host that joins later, or whose agent restarted, catches up with the cluster.

The reconciler's worker calls :func:`catch_up` after it read the facts of a host whose
report carried a new boot id (its first report after joining, a restarted agent, a host
that booted again): before its VMs are resynced, the host gets

- every ready network, with its VXLAN endpoint and peers (``networks.host_bodies``: what a
  create builds there; an overlay served by the host its row names, sticky), and its static
  leases (a host that only carries an overlay may serve it later); and the other hosts
  that are up get the overlay networks again, so that their peer lists name the new host;
- every ready pool that is cluster-wide (shared directory, rbd), read back as a host that
  was not the first (a shared pool's marker must be there: ``verify``);
- the ports of its VMs' NICs (security groups, anti-spoofing).

Every agent route it calls is an idempotent PUT, so catching up a host that has it all
already changes nothing there. One thing that fails (a network the host refuses, a pool it
cannot reach) does not stop the others: each is logged and named in the result; the next
restart of the agent tries again. When a host is removed, :func:`peers_changed` drops it from the
VXLAN peers of the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from corral.agent_api.networks import NetworkBody, ReservationEntry
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Network, Nic, StoragePool, Vm
from corral.engine.services import host_fanout, networks, pools, security_groups, vm_nics
from corral.errors import CorralError

log = logging.getLogger(__name__)

READY = "ready"


def catch_up(ctx: EngineContext, host_id: str) -> list[str]:
    """Push what the cluster has to the host; what could not be done (empty: all of it)."""
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            return []
        name = host.name
        nets = list(s.query(Network).filter_by(status=READY).order_by(Network.name))
        mine = [(n.name, body) for n in nets
                if (body := networks.host_bodies(s, n).get(host_id)) is not None]
        # static leases everywhere, served or not: a host may serve an overlay later
        static = [(n.name, [ReservationEntry(mac=m, ip=ip, name=label)
                            for m, ip, label in vm_nics.reservations_of(s, n.id)])
                  for n in nets if n.subnet and n.dhcp_start]
        shared = [(p.name, pools.agent_body(p, "verify")) for p in s.query(StoragePool)
                  .filter(StoragePool.host_id.is_(None), StoragePool.status == READY)
                  .order_by(StoragePool.name)]
        nic_ids = [n for (n,) in s.query(Nic.id).join(Vm, Vm.id == Nic.vm_id)
                   .filter(Vm.host_id == host_id)]
        overlays = any(n.vni is not None for n in nets)
    agent = ctx.agent(host_id)
    problems: list[str] = []
    for net, body in mine:
        _try(problems, f"network {net}", agent.ensure_network, net, body)
    for net, entries in static:
        if entries:
            _try(problems, f"static leases of network {net}", agent.set_reservations, net,
                 entries)
    for pool, pbody in shared:
        _try(problems, f"pool {pool}", agent.ensure_pool, pool, pbody)
    _try(problems, "ports of its VMs", security_groups.push_nics, ctx, nic_ids)
    if overlays:  # the others learn this host as a VXLAN peer
        problems.extend(peers_changed(ctx, skip=host_id))
    if problems:
        log.warning("catching up host %s: %s", name, "; ".join(problems))
    return problems


def peers_changed(ctx: EngineContext, skip: str | None = None) -> list[str]:
    """Build every ready overlay network again on every host that is up (but ``skip``):
    each host's body names the cluster's hosts as they are now. What failed, per host."""
    with ctx.db.session() as s:
        up = [h.id for h in s.query(Host).filter(Host.status == "up").order_by(Host.name)
              if h.id != skip]
        per_host: dict[str, list[tuple[str, NetworkBody]]] = {h: [] for h in up}
        names = {h.id: h.name for h in s.query(Host)}
        for n in s.query(Network).filter(Network.status == READY, Network.vni.isnot(None)) \
                .order_by(Network.name):
            for h, body in networks.host_bodies(s, n).items():
                if h in per_host:
                    per_host[h].append((n.name, body))

    def rebuild(work: list[tuple[str, NetworkBody]]) -> Callable[[AgentClient], None]:
        def call(agent: AgentClient) -> None:
            for net, body in work:
                agent.ensure_network(net, body)
        return call

    outcomes = host_fanout.each_host(ctx, [(h, rebuild(w)) for h, w in per_host.items() if w])
    return [f"VXLAN peers on host {names.get(o.host_id, o.host_id)}: {o.error.message}"
            for o in outcomes if o.error is not None]


def _try(problems: list[str], what: str, call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except CorralError as exc:
        problems.append(f"{what}: {exc.message}")
