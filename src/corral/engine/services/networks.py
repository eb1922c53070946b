"""Networks: desired state in the DB, built on every host by its agent.

``create`` and ``delete`` check everything first (the request, the name, who may share a
bridge, subnets overlapping other corral networks, VNIs, and on each host the agent's own
dry run: host routes, interface names), so a refused request leaves no row, operation or
device behind; then an operation's executor calls each host's agent
(``PUT``/``DELETE /v1/networks/NAME``; up to host_fanout.MAX_PARALLEL hosts at once, like
the dry runs) and undoes what it did if a host fails. A network is
``creating``, ``ready`` or ``deleting``; VMs may join it only when it is ready.

The spec (``corral.agent_api.networks.NetworkSpec``, shared with the agents) is the one
model of a network on a host: the engine builds it from a row to validate a request and to
know where a NIC plugs in (``nic_spec``), the agent to build the devices.

Seams for later work: ``users`` (the NICs on a network: today each VM has one), ``_underlay``
and ``_peers`` (the hosts' VXLAN endpoints, from the cluster's host records).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from corral.agent_api.networks import NetworkBody, NetworkSpec, NetworkStatus, parse_subnet, validate_spec
from corral.api import Network as NetworkOut
from corral.api import NetworkCreate, NetworkMode, Operation, Reservation
from corral.domainxml import NicSpec
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host, Network, Nic, Vm
from corral.engine.db.models import Operation as OperationRow
from corral.engine.operations import OpContext
from corral.engine.services import op_undo, quotas
from corral.engine.services.host_fanout import answers, each_host, put_on_hosts
from corral.errors import Conflict, CorralError, InvalidInput, NotFound

POOL = ipaddress.IPv4Network("10.210.0.0/16")  # where a subnet is picked when none is given
DEFAULT_DNS_DOMAIN = "corral"
log = logging.getLogger(__name__)
READY, CREATING, DELETING = "ready", "creating", "deleting"


# -- the row as the agent's spec ---------------------------------------------------------

def spec_of(n: Network, local: str | None = None, peers: list[str] | None = None,
            serve: bool = True) -> NetworkSpec:
    return NetworkSpec(
        name=n.name, bridge=n.bridge, subnet=n.subnet, gateway=n.gateway,
        dhcp_start=n.dhcp_start, dhcp_end=n.dhcp_end, nat=n.mode == "nat",
        dns_domain=n.dns_domain, mode=n.mode, backend=n.backend, vlan=n.vlan, vni=n.vni,
        local=local, peers=tuple(peers or ()), serve=serve,
    )


def nic_spec(net: Network, mac: str) -> NicSpec:
    """Where a VM's NIC on ``net`` plugs in: bridge, OVS virtualport, VLAN tag, MTU."""
    spec = spec_of(net)
    return NicSpec(mac=mac, bridge=spec.port_bridge,
                   virtualport="openvswitch" if net.backend == "ovs" else None,
                   vlan=spec.port_vlan, mtu=spec.mtu)


def check_usable(net: Network) -> None:
    """A VM may join a network only while it is ready (not being created or deleted)."""
    if net.status != READY:
        raise Conflict(f"network {net.name} is {net.status}, not ready", field="network")


def users(s: Any, net: Network) -> list[str]:
    """The VMs with a NIC on ``net``."""
    return sorted({n for (n,) in s.query(Vm.name).join(Nic, Nic.vm_id == Vm.id)
                   .filter(Nic.network_id == net.id)})


def reservations(s: Any, net: Network) -> list[Reservation]:
    """The static leases (``vm nic add --ip``) on ``net``, by address."""
    rows = (s.query(Nic, Vm.name).join(Vm, Nic.vm_id == Vm.id)
            .filter(Nic.network_id == net.id, Nic.ip.isnot(None)))
    return sorted((Reservation(mac=n.mac, ip=str(n.ip), vm=name) for n, name in rows),
                  key=lambda r: ipaddress.IPv4Address(r.ip))


def to_api(n: Network, vms: list[str] | None = None,
           reserved: list[Reservation] | None = None) -> NetworkOut:
    return NetworkOut(
        name=n.name, project=n.project, shared=n.shared, bridge=n.bridge, subnet=n.subnet,
        gateway=n.gateway,
        dhcp_start=n.dhcp_start, dhcp_end=n.dhcp_end, nat=n.mode == "nat",
        mode=NetworkMode(n.mode), backend=n.backend, vlan=n.vlan,
        overlay=n.overlay, vni=n.vni, dns_domain=n.dns_domain, mtu=spec_of(n).mtu,
        status=n.status, vms=vms or [], reservations=reserved or [],
    )


# -- hosts: who builds a network, and VXLAN endpoints -------------------------------------

def _underlay(host: Host) -> str | None:
    """A host's VXLAN endpoint: its ``address`` fact, else the address of its agent URL
    (None for a loopback agent: a single node has no peers)."""
    for value in (host.facts.get("address"), urlparse(host.url).hostname):
        try:
            addr = ipaddress.IPv4Address(str(value))
        except ValueError:
            continue
        if not addr.is_loopback and not addr.is_unspecified:
            return str(addr)
    return None


def _host_bodies(s: Any, n: Network) -> list[tuple[str, NetworkBody]]:
    """(host id, agent body) for every host.

    Every host, not only those that answered the last reconciler pass: a host that cannot be
    reached fails the operation (and it is undone) rather than being left without, or with
    a stale copy of, the network. An overlay network is one L2 segment: one host serves its
    gateway, DHCP and DNS (``server``); the others carry the segment. Any other network is
    local to each host, and each host serves it.
    """
    every = list(s.query(Host).order_by(Host.name))
    serving = server(n, every) if n.vni is not None else None
    out = []
    for h in every:
        local, peers, serve = None, None, True
        if n.vni is not None:
            local = _underlay(h)
            peers = [a for o in every if o.id != h.id and (a := _underlay(o)) is not None]
            serve = h.id == serving
        out.append((h.id, spec_of(n, local, peers, serve).body()))
    return out


# -- who serves an overlay network: sticky, moved only off a host known to be off ----------

def server(n: Network, every: list[Host]) -> str | None:
    """The host id that serves overlay network ``n`` (``every``: the hosts by name).

    Its recorded server while that host exists, even when it does not answer: a host that is
    only cut off may still serve, and two DHCP servers on one segment hand out one address
    twice. Otherwise (new network, or its server was removed or fenced while no other host
    was up) the first host by name that is up, recorded now; with none up, the first by
    name for now (not recorded: the first host up later is chosen)."""
    if n.served_by is not None and any(h.id == n.served_by for h in every):
        return n.served_by
    chosen = next((h for h in every if h.status == "up"), None)
    if chosen is None:
        return every[0].id if every else None
    n.served_by = chosen.id
    return n.served_by


def forget_server(s: Any, host_id: str) -> list[str]:
    """Its overlay networks lose ``host_id`` as their server (it is being removed): the next
    build of their bodies chooses another (``server``). The names of those networks."""
    rows = list(s.query(Network).filter(Network.served_by == host_id))
    for n in rows:
        n.served_by = None
    return sorted(n.name for n in rows)


def move_servers_off(ctx: EngineContext, host_id: str) -> list[str]:
    """The overlay networks that ``host_id`` served move to the first host by name that is
    up, and every host that is up gets its new body (the new server starts serving, the
    others keep carrying the segment). Only for a host known to be off (fenced) or gone:
    the dead host gets a body that does not serve when it joins again (host_sync). What
    failed, per host (the next restart of its agent catches up)."""
    with ctx.db.session() as s:
        up = [h for h in s.query(Host).filter(Host.status == "up").order_by(Host.name)
              if h.id != host_id]
        names = {h.id: h.name for h in s.query(Host)}
        moved: list[tuple[str, str | None]] = []
        for n in s.query(Network).filter(Network.served_by == host_id).order_by(Network.name):
            n.served_by = up[0].id if up else None  # none up: the first that is, later
            moved.append((n.name, n.served_by))
        s.flush()
        per_host: dict[str, list[tuple[str, NetworkBody]]] = {h.id: [] for h in up}
        for n in s.query(Network).filter(Network.name.in_([m for m, _ in moved if up]),
                                         Network.status == READY):
            for h, body in host_bodies(s, n).items():
                if h in per_host:
                    per_host[h].append((n.name, body))
    for net, to in moved:
        where = f"host {names[to]}" if to else "the first host that is up again"
        ctx.bus.publish("network", {"name": net, "status": READY, "served_by": names.get(to or ""),
                                    "message": f"network {net}: its gateway, DHCP and DNS move "
                                               f"from host {names.get(host_id, host_id)} to "
                                               f"{where}"})

    def rebuild(work: list[tuple[str, NetworkBody]]) -> Callable[[AgentClient], None]:
        def call(agent: AgentClient) -> None:
            for net, body in work:
                agent.ensure_network(net, body)
        return call

    outcomes = each_host(ctx, [(h, rebuild(w)) for h, w in per_host.items() if w])
    problems = [f"network bodies on host {names.get(o.host_id, o.host_id)}: {o.error.message}"
                for o in outcomes if o.error is not None]
    for problem in problems:
        log.warning("moving network servers off host %s: %s", names.get(host_id), problem)
    return problems


def host_bodies(s: Any, n: Network) -> dict[str, NetworkBody]:
    """Host id -> that host's agent body of ``n`` (as a create builds it everywhere): what
    services/host_sync.py pushes to a host that joins, and to the VXLAN peers of one."""
    return dict(_host_bodies(s, n))


def _ensure(name: str, body: NetworkBody) -> Callable[[AgentClient], NetworkStatus]:
    """A host's build of the network (its own body: an overlay's differ per host)."""
    return lambda agent: agent.ensure_network(name, body)


# -- create ------------------------------------------------------------------------------

def _default_bridge(req: NetworkCreate) -> str:
    if req.vlan is not None:  # VLAN networks share one trunk per backend
        return "cr-ovs" if req.backend == "ovs" else "cr-trunk"
    short = f"cr-{req.name}"
    if len(short) <= 15:
        return short
    return f"cr-{req.name[:7]}-{hashlib.sha256(req.name.encode()).hexdigest()[:4]}"


def _pick_subnet(taken: list[ipaddress.IPv4Network]) -> str:
    for candidate in POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(t) for t in taken):
            return str(candidate)
    raise Conflict(f"no free /24 left in {POOL}; give --subnet", field="subnet")


def _fill(req: NetworkCreate, taken: list[ipaddress.IPv4Network]) -> NetworkSpec:
    """The request with its defaults, as an agent spec (not validated yet)."""
    managed = req.mode != NetworkMode.BRIDGE
    if not managed and not req.bridge:
        raise InvalidInput("bridge mode joins an existing host bridge: give its name",
                           field="bridge")
    if req.overlay is not None and req.vni is None:
        raise InvalidInput("a VXLAN overlay needs a vni (1-16777215)", field="vni")
    if (req.dhcp_start is None) != (req.dhcp_end is None):
        raise InvalidInput("give both ends of the DHCP range", field="dhcp_end")
    subnet, gateway, start, end = req.subnet, req.gateway, req.dhcp_start, req.dhcp_end
    dns = req.dns_domain
    if managed:
        if subnet is None:
            subnet = _pick_subnet(taken)
        first_host, middle, last_host = _default_addresses(parse_subnet(subnet))
        if gateway is None:
            gateway = first_host
        if start is None:
            start, end = middle, last_host
        dns = dns or DEFAULT_DNS_DOMAIN
    return NetworkSpec(
        name=req.name, bridge=req.bridge or _default_bridge(req), subnet=subnet,
        gateway=gateway, dhcp_start=start, dhcp_end=end, nat=req.mode == NetworkMode.NAT,
        dns_domain=dns, mode=req.mode.value, backend=req.backend.value, vlan=req.vlan,
        vni=req.vni,
    )


def _default_addresses(net: ipaddress.IPv4Network | ipaddress.IPv6Network
                       ) -> tuple[str, str, str]:
    """(gateway, DHCP start, DHCP end) of a subnet: its first host address, and the upper
    half of its hosts. Computed, not listed: a /8 has 16 million hosts."""
    first = net.network_address + 1
    count = net.num_addresses - 2  # without the network and broadcast addresses
    return str(first), str(first + count // 2), str(first + count - 1)


def _check_conflicts(s: Any, spec: NetworkSpec) -> None:
    """Name, bridge sharing, subnet overlap and VNI against every other corral network."""
    if s.query(Network).filter_by(name=spec.name).count():
        raise Conflict(f"network {spec.name} already exists", field="name")
    net = parse_subnet(spec.subnet) if spec.subnet else None
    for other in s.query(Network).order_by(Network.name):
        if other.bridge == spec.bridge:
            shareable = (spec.vlan is not None and other.vlan is not None
                         and spec.backend == other.backend)
            if not shareable:
                raise Conflict(
                    f"bridge {spec.bridge} belongs to network {other.name}; only VLAN networks "
                    "of one backend share a bridge", field="bridge")
            if other.vlan == spec.vlan:
                raise Conflict(f"VLAN {spec.vlan} on bridge {spec.bridge} is network "
                               f"{other.name}'s", field="vlan")
        if net is not None and other.subnet and net.overlaps(parse_subnet(other.subnet)):
            raise Conflict(f"subnet {spec.subnet} overlaps network {other.name} "
                           f"({other.subnet})", field="subnet")
        if spec.vni is not None and other.vni == spec.vni:
            raise Conflict(f"VNI {spec.vni} is network {other.name}'s", field="vni")


def create(ctx: EngineContext, req: NetworkCreate, project: str = DEFAULT_PROJECT) -> Operation:
    with ctx.db.session() as s:
        taken = [parse_subnet(n.subnet) for n in s.query(Network) if n.subnet]
        spec = _fill(req, taken)
        validate_spec(spec)
        _check_conflicts(s, spec)
        host_ids = [h.id for h in s.query(Host)]
    body = spec.body()
    # The agents' dry run (host routes, interface names), every host at once: the first
    # refusal (by host) is the answer, as if they had been asked one after another.
    answers(each_host(ctx, [(h, lambda a: a.check_network(spec.name, body)) for h in host_ids]))
    with ctx.db.session() as s:
        claims.serialize(s, Network)  # no other create between this check and our row
        _check_conflicts(s, spec)  # again: a concurrent create may have won meanwhile
        quotas.check(s, project, {"networks": 1})
        row = Network(
            project=project, name=spec.name, bridge=spec.bridge, subnet=spec.subnet, gateway=spec.gateway,
            dhcp_start=spec.dhcp_start, dhcp_end=spec.dhcp_end, mode=spec.kind,
            backend=spec.backend, vlan=spec.vlan, vni=spec.vni,
            overlay=req.overlay.value if req.overlay else ("vxlan" if spec.vni else None),
            dns_domain=spec.dns_domain, status=CREATING,
        )
        s.add(row)
        with claims.unique(f"network {spec.name} (or its VNI) was just taken by a concurrent "
                           "request", field="name"):
            s.flush()
        net_id = row.id
    ctx.bus.publish("network", {"name": spec.name, "status": CREATING})
    return ctx.ops.submit("network.create", {"networks": [spec.name]}, {"network_id": net_id},
                          [f"network:{spec.name}"], project=project)


def execute_create(ctx: EngineContext, op: OpContext) -> None:
    with ctx.db.session() as s:
        row = s.get(Network, op.params["network_id"])
        if row is None:
            return
        name = row.name
        bodies = _host_bodies(s, row)
    try:
        put_on_hosts(ctx, op, [(h, _ensure(name, body)) for h, body in bodies],
                     lambda a: a.delete_network(name), "building")
    except CorralError:
        with ctx.db.session() as s:
            row = s.get(Network, op.params["network_id"])
            if row is not None:
                s.delete(row)
        ctx.bus.publish("network", {"name": name, "status": "deleted"})
        raise
    with ctx.db.session() as s:
        row = s.get(Network, op.params["network_id"])
        if row is not None:
            row.status = READY
    ctx.bus.publish("network", {"name": name, "status": READY})


# -- delete ------------------------------------------------------------------------------

def _operation_owns(s: Any, name: str) -> bool:
    """An operation on the network is pending or running. (One that an engine restart gave
    up on leaves the network creating or deleting with no owner: it may then be deleted.)"""
    ops = s.query(OperationRow).filter(OperationRow.status.in_(["pending", "running"]))
    return any(name in (op.resources or {}).get("networks", []) for op in ops)


def delete(ctx: EngineContext, name: str) -> Operation:
    with ctx.db.session() as s:
        row = s.query(Network).filter_by(name=name).one_or_none()
        if row is None:
            raise NotFound(f"network {name} not found")
        claims.hold(s, row)  # another delete, or a NIC joining it, at the same moment
        if row.status != READY and _operation_owns(s, name):
            raise Conflict(f"network {name} is {row.status}", field="name")
        in_use = users(s, row)
        if in_use:
            raise Conflict(f"network {name} is used by VMs: {', '.join(in_use)}; delete them "
                           "or move their NICs first", field="name", vms=in_use)
        row.status = DELETING
        net_id = row.id
    ctx.bus.publish("network", {"name": name, "status": DELETING})
    # exclusive: a second delete that passed the checks above before the first's
    # operation existed (a leftover "deleting" network may be deleted again) is refused.
    return ctx.ops.submit("network.delete", {"networks": [name]}, {"network_id": net_id},
                          [f"network:{name}"], exclusive=["networks"])


def execute_delete(ctx: EngineContext, op: OpContext) -> None:
    with ctx.db.session() as s:
        row = s.get(Network, op.params["network_id"])
        if row is None:
            return
        name = row.name
        in_use = users(s, row)
        if in_use:  # cannot happen while VMs check the status; never cut a NIC off anyway
            row.status = READY
            raise Conflict(f"network {name} is used by VMs: {', '.join(in_use)}", vms=in_use)
        host_ids = [h.id for h in s.query(Host)]  # all: see _host_bodies

    def removed(n: int) -> None:
        op.progress(10 + 80 * n // len(host_ids), f"removed from {n} of {len(host_ids)} hosts")

    try:
        answers(each_host(ctx, [(h, lambda a: a.delete_network(name)) for h in host_ids],
                          removed))
    except CorralError:
        with ctx.db.session() as s:  # ready again: the delete may simply be retried
            row = s.get(Network, op.params["network_id"])
            if row is not None:
                row.status = READY
        ctx.bus.publish("network", {"name": name, "status": READY})
        raise
    with ctx.db.session() as s:
        row = s.get(Network, op.params["network_id"])
        if row is not None:
            s.delete(row)
    ctx.bus.publish("network", {"name": name, "status": "deleted"})


# -- the default network, reads ----------------------------------------------------------

def ensure_default(ctx: EngineContext, subnet: str, bridge: str = "corral0") -> NetworkOut:
    """The `default` NAT network of `corral up`: gateway .1, DHCP over the upper half."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise InvalidInput(f"subnet {subnet!r} is not a CIDR: {exc}", field="subnet") from exc
    if net.num_addresses < 8:
        raise InvalidInput(f"subnet {subnet} is too small for a network", field="subnet")
    first_host, middle, last_host = _default_addresses(net)
    with ctx.db.session() as s:
        row = s.query(Network).filter_by(name="default").one_or_none()
        created = row is None
        if row is None:
            row = Network(
                name="default", bridge=bridge, subnet=str(net), gateway=first_host,
                dhcp_start=middle, dhcp_end=last_host, mode="nat", backend="linuxbridge",
                dns_domain=DEFAULT_DNS_DOMAIN, status=READY,
                shared=True,  # every project's VMs may attach to it (`network share`)
            )
            s.add(row)
            s.flush()
        bodies = _host_bodies(s, row)
        out = to_api(row, users(s, row))
    try:
        answers(each_host(ctx, [(h, _ensure(out.name, body)) for h, body in bodies]))
    except CorralError:
        if created:  # refused (e.g. a bridge of another node): `up --subnet/--bridge` may retry
            with ctx.db.session() as s:
                s.query(Network).filter_by(name="default").delete()
        raise
    return out


def list_networks(ctx: EngineContext) -> list[NetworkOut]:
    with ctx.db.session() as s:
        return [to_api(n, users(s, n), reservations(s, n))
                for n in s.query(Network).order_by(Network.name)]


def get(ctx: EngineContext, name: str) -> NetworkOut:
    with ctx.db.session() as s:
        row = s.query(Network).filter_by(name=name).one_or_none()
        if row is None:
            raise NotFound(f"network {name} not found")
        return to_api(row, users(s, row), reservations(s, row))


def leases(ctx: EngineContext, name: str) -> list[dict[str, object]]:
    get(ctx, name)
    with ctx.db.session() as s:
        hosts_ids = [h.id for h in s.query(Host).filter_by(status="up")]
    out: list[dict[str, object]] = []
    found = each_host(ctx, [(h, lambda a: a.network_leases(name)) for h in hosts_ids])
    for host_leases in answers(found, missing_ok=True):  # missing: not (yet) built there
        out.extend(lease.model_dump() for lease in host_leases)
    return out


def register(ctx: EngineContext) -> None:
    ctx.ops.register("network.create", lambda op: execute_create(ctx, op),
                     undo=op_undo.delete_row(ctx, Network, "network_id", event="network"))
    ctx.ops.register("network.delete", lambda op: execute_delete(ctx, op),
                     undo=op_undo.set_fields(ctx, Network, "network_id", status=READY))
