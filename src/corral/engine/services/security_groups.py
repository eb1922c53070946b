"""Security groups (``corral sg``) and the per-NIC ports that carry them to the hosts.

A group is a set of *allow* rules (direction, protocol, optional tcp/udp port range, a CIDR or
another group's NICs' addresses). A NIC in no group is not filtered (only anti-spoofing); a
NIC in one or more groups gets, for each direction, the union of their rules and a final
drop: ingress is denied and egress allowed by default only because a new group comes with one
rule, ``egress any 0.0.0.0/0``, which can be removed. Replies (conntrack established/related),
DHCP and ARP always pass.

Every NIC of a VM with a host is a *port* on that host's agent (``PUT /v1/ports/TAP``, the
tap being ``cv`` + the MAC's hex digits): its MAC, static address, whether its source IP is
checked, and its resolved rules. The agent applies all its ports as one nftables transaction
(corral.agent.network.firewall). Ports are pushed when a VM is created or started, when a NIC
is added, changed (``vm nic update``) or removed, and for every NIC a rule change touches:
members of the group, and members of groups whose rules name it as ``remote_group`` (their
address sets change when members come or go). These changes are synchronous (no operation):
each is one small transaction per host, and a failed push restores the previous rows and
re-pushes them, so nothing is half-applied. A push talks to its hosts at once (a host that
fails is named and does not stop the others); pushes that run at once are ordered per port
(``_PortOrder``), never by an engine-wide lock.

Limits: NICs on Open vSwitch networks (userspace datapath: no nftables hooks) cannot join a
group; their anti-spoofing is OpenFlow flows the agent installs on the OVS bridge (the same
port body; the agent decides by the network's backend). On bridge-mode and overlay (VXLAN)
networks the source MAC is checked but not the IP (no local DHCP server to learn addresses
from). A remote group's addresses are resolved when rules are pushed (static IPs and current
DHCP leases): a member that gets its first lease later is included at the next push (any
change, or a VM start).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

from sqlalchemy.orm import Session

from corral.agent_api.ports import PortBody, PortRuleBody
from corral.api.security_groups import SecurityGroup as SecurityGroupOut
from corral.api.security_groups import SecurityGroupCreate, SgRuleCreate
from corral.api.security_groups import SgRule as SgRuleOut
from corral.domainxml import tap_of
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import (
    Host,
    Network,
    Nic,
    NicSecurityGroup,
    SecurityGroup,
    SgRule,
    Vm,
)
from corral.engine.services import host_fanout, quotas
from corral.errors import Conflict, CorralError, HostError, InvalidInput, NotFound

# The check for a duplicate rule and its insert, together (no HTTP call under it).
_rules_lock = threading.Lock()


# -- reading ---------------------------------------------------------------------------------

def find(s: Session, name: str, field: str = "name") -> SecurityGroup:
    sg = s.query(SecurityGroup).filter_by(name=name).one_or_none()
    if sg is None:
        raise NotFound(f"security group {name} not found", field=field)
    return sg


def _rule_api(s: Session, r: SgRule) -> SgRuleOut:
    remote = s.get(SecurityGroup, r.remote_group_id) if r.remote_group_id else None
    return SgRuleOut(id=r.id, direction=r.direction, protocol=r.protocol, port_min=r.port_min,
                     port_max=r.port_max, cidr=r.cidr,
                     remote_group=remote.name if remote else None)


def _rules(s: Session, sg_id: str) -> list[SgRule]:
    return list(s.query(SgRule).filter_by(sg_id=sg_id).order_by(SgRule.created_at, SgRule.id))


def to_api(s: Session, sg: SecurityGroup) -> SecurityGroupOut:
    macs = [m for (m,) in s.query(Nic.mac).join(NicSecurityGroup, NicSecurityGroup.nic_id == Nic.id)
            .filter(NicSecurityGroup.sg_id == sg.id).order_by(Nic.mac)]
    return SecurityGroupOut(name=sg.name, project=sg.project, description=sg.description,
                            rules=[_rule_api(s, r) for r in _rules(s, sg.id)], nics=macs)


def list_groups(ctx: EngineContext) -> list[SecurityGroupOut]:
    with ctx.db.session() as s:
        return [to_api(s, sg) for sg in s.query(SecurityGroup).order_by(SecurityGroup.name)]


def get(ctx: EngineContext, name: str) -> SecurityGroupOut:
    with ctx.db.session() as s:
        return to_api(s, find(s, name))


def group_names(s: Session, nic_id: str) -> list[str]:
    return [n for (n,) in s.query(SecurityGroup.name)
            .join(NicSecurityGroup, NicSecurityGroup.sg_id == SecurityGroup.id)
            .filter(NicSecurityGroup.nic_id == nic_id).order_by(SecurityGroup.name)]


# -- groups and rules ------------------------------------------------------------------------

def create(ctx: EngineContext, req: SecurityGroupCreate,
           project: str = DEFAULT_PROJECT) -> SecurityGroupOut:
    with ctx.db.session() as s:
        if s.query(SecurityGroup).filter_by(name=req.name).count():
            raise Conflict(f"security group {req.name} already exists", field="name")
        quotas.check(s, project, {"security_groups": 1})
        sg = SecurityGroup(name=req.name, description=req.description, project=project)
        s.add(sg)
        with claims.unique(f"security group {req.name} already exists", field="name"):
            s.flush()  # a concurrent create took the name first
        s.add(SgRule(sg_id=sg.id, direction="egress", protocol="any", cidr="0.0.0.0/0"))
        s.flush()
        return to_api(s, sg)


def delete(ctx: EngineContext, name: str) -> None:
    with ctx.db.session() as s:
        claims.serialize(s, SecurityGroup)  # no NIC or rule may join it while we check
        sg = find(s, name)
        users = s.query(NicSecurityGroup).filter_by(sg_id=sg.id).count()
        if users:
            raise Conflict(f"security group {name} is used by {users} NIC(s): take them out "
                           "first (`corral vm nic update VM MAC --no-security-groups`)",
                           field="name")
        refs = sorted({g for (g,) in s.query(SecurityGroup.name)
                       .join(SgRule, SgRule.sg_id == SecurityGroup.id)
                       .filter(SgRule.remote_group_id == sg.id, SgRule.sg_id != sg.id)})
        if refs:
            raise Conflict(f"security group {name} is the remote group of rules of "
                           f"{', '.join(refs)}: remove those rules first", field="name")
        for rule in _rules(s, sg.id):
            s.delete(rule)
        s.flush()
        s.delete(sg)


def _same(r: SgRule, req: SgRuleCreate, remote_id: str | None) -> bool:
    return (r.direction, r.protocol, r.port_min, r.port_max, r.cidr, r.remote_group_id) == (
        req.direction.value, req.protocol.value, req.port_min, req.port_max, req.cidr,
        remote_id)


def add_rule(ctx: EngineContext, name: str, req: SgRuleCreate) -> SgRuleOut:
    """Add a rule and apply it at once to every NIC of the group (live). A failed push
    takes out this rule only (and pushes again), so changes running at once stay apart."""
    with _rules_lock, ctx.db.session() as s:
        sg = find(s, name)
        remote_id = None
        if req.remote_group is not None:
            remote_id = find(s, req.remote_group, "remote_group").id
        if any(_same(r, req, remote_id) for r in _rules(s, sg.id)):
            raise Conflict(f"security group {name} already has this rule", field="rule")
        rule = SgRule(sg_id=sg.id, direction=req.direction.value,
                      protocol=req.protocol.value, port_min=req.port_min,
                      port_max=req.port_max, cidr=req.cidr, remote_group_id=remote_id)
        s.add(rule)
        s.flush()
        out, rule_id, sg_id = _rule_api(s, rule), rule.id, sg.id
    try:
        push_groups(ctx, [sg_id])
    except CorralError:
        with ctx.db.session() as s:
            row = s.get(SgRule, rule_id)
            if row is not None:
                s.delete(row)
        with contextlib.suppress(CorralError):
            push_groups(ctx, [sg_id])
        raise
    return out


def remove_rule(ctx: EngineContext, name: str, rule_id: str) -> None:
    with ctx.db.session() as s:
        sg = find(s, name)
        rule = s.get(SgRule, rule_id)
        if rule is None or rule.sg_id != sg.id:
            raise NotFound(f"security group {name} has no rule {rule_id}", field="rule_id")
        saved = {c: getattr(rule, c) for c in ("id", "sg_id", "direction", "protocol",
                                               "port_min", "port_max", "cidr",
                                               "remote_group_id", "created_at")}
        s.delete(rule)
        sg_id = sg.id
    try:
        push_groups(ctx, [sg_id])
    except CorralError:
        with ctx.db.session() as s:
            s.add(SgRule(**saved))
        with contextlib.suppress(CorralError):
            push_groups(ctx, [sg_id])
        raise


# -- NIC membership --------------------------------------------------------------------------

def resolve(s: Session, names: Iterable[str], net: Network) -> list[SecurityGroup]:
    """The groups named (404 naming ``security_groups``), checked usable on ``net``."""
    groups = [find(s, n, "security_groups") for n in names]
    if groups and net.backend == "ovs":
        raise InvalidInput(f"network {net.name} is an Open vSwitch network (userspace "
                           "datapath): security groups are enforced with nftables on Linux "
                           "bridges only; use a network made with --backend linuxbridge",
                           field="security_groups")
    return groups


def set_groups(s: Session, nic_id: str, groups: list[SecurityGroup]) -> list[str]:
    """Make ``groups`` the NIC's groups; the ids of the groups before."""
    before = [m.sg_id for m in s.query(NicSecurityGroup).filter_by(nic_id=nic_id)]
    s.query(NicSecurityGroup).filter_by(nic_id=nic_id).delete()
    for g in groups:
        s.add(NicSecurityGroup(nic_id=nic_id, sg_id=g.id))
    with claims.unique("a security group of the NIC was just deleted by a concurrent request",
                       field="security_groups"):
        s.flush()
    return before


_nic_locks: dict[str, threading.Lock] = {}  # one per NIC changed since the engine started
_nic_locks_guard = threading.Lock()


@contextlib.contextmanager
def membership_change(mac: str) -> Iterator[None]:
    """Hold one NIC's groups while they are changed, pushed and, when the push fails, put
    back: the put-back restores this change's "before", never over another's change of the
    same NIC. Other NICs do not wait."""
    with _nic_locks_guard:
        lock = _nic_locks.setdefault(mac, threading.Lock())
    with lock:
        yield


# -- ports: what each host's agent gets ------------------------------------------------------

def has_port(net: Network) -> bool:
    """Every NIC is a port (on OVS networks the agent renders OpenFlow flows, not nftables;
    security groups are refused there by ``resolve``)."""
    return True


def _ip_guard(net: Network) -> bool:
    """Source IPs are checked where the host's own dnsmasq hands the addresses out."""
    return net.mode != "bridge" and net.vni is None and bool(net.subnet)


class _Addresses:
    """Addresses of NICs (static, else DHCP leases asked from the agents, once per push)."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self._leases: dict[tuple[str, str], dict[str, str]] = {}

    def of(self, nic: Nic, net: Network, host_id: str | None) -> list[str]:
        if nic.ip:
            return [nic.ip]
        if host_id is None or not net.subnet:
            return []
        key = (host_id, net.name)
        if key not in self._leases:
            try:
                rows = self.ctx.agent(host_id).network_leases(net.name, timeout=15)
                self._leases[key] = {r.mac.lower(): r.ip for r in rows}
            except CorralError:
                self._leases[key] = {}
        ip = self._leases[key].get(nic.mac)
        return [ip] if ip else []


def _members(s: Session, sg_id: str) -> list[tuple[Nic, Network, str | None]]:
    rows = (s.query(Nic, Network, Vm.host_id)
            .join(NicSecurityGroup, NicSecurityGroup.nic_id == Nic.id)
            .join(Network, Network.id == Nic.network_id).join(Vm, Vm.id == Nic.vm_id)
            .filter(NicSecurityGroup.sg_id == sg_id))
    return [(n, net, h) for n, net, h in rows]


def qos_in_xml(host: Host | None) -> bool:
    """Whether a NIC's QoS goes into its libvirt ``<bandwidth>`` on ``host`` (its fact
    ``qos``: ``libvirt``, the default of agents that do not say) or is policed by the
    host's agent with nftables (``nftables``: a kernel without tc's sfq qdisc or police
    action, which libvirt needs)."""
    return host is None or host.facts.get("qos", "libvirt") == "libvirt"


def port_body(s: Session, nic: Nic, net: Network, addrs: _Addresses,
              host: Host | None = None) -> PortBody:
    """The agent's ``PUT /v1/ports/TAP`` body of a NIC."""
    sg_ids = [m.sg_id for m in s.query(NicSecurityGroup).filter_by(nic_id=nic.id)]
    rules: list[PortRuleBody] = []
    remote_cache: dict[str, list[str]] = {}
    for sg_id in sg_ids:
        for r in _rules(s, sg_id):
            if r.remote_group_id is not None:
                if r.remote_group_id not in remote_cache:
                    remote_cache[r.remote_group_id] = sorted({
                        f"{ip}/32" for m, mnet, host in _members(s, r.remote_group_id)
                        for ip in addrs.of(m, mnet, host)})
                cidrs = remote_cache[r.remote_group_id]
            else:
                cidrs = [r.cidr or "0.0.0.0/0"]
            rules.append(PortRuleBody(direction=r.direction, protocol=r.protocol,
                                      port_min=r.port_min, port_max=r.port_max, cidrs=cidrs))
    policed = not qos_in_xml(host)  # else libvirt's <bandwidth> does it
    return PortBody(mac=nic.mac, ips=[nic.ip] if nic.ip else [], ip_guard=_ip_guard(net),
                    filtered=bool(sg_ids) and net.backend != "ovs", rules=rules,
                    network=net.name,  # the agent: its leases, its backend (nftables or OVS)
                    inbound_kbps=nic.inbound_kbps if policed else None,
                    outbound_kbps=nic.outbound_kbps if policed else None)


class _Slot:
    """One port of one agent: its lock, and the generation of the last body that landed."""

    __slots__ = ("landed", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.landed = 0


class _PortOrder:
    """Why pushes that run at once never leave an older ruleset on a port.

    A push draws a generation number *before* it reads the database; a change is committed
    before its push draws, so a push's snapshot holds every change whose push drew a lower
    number. A body goes to its port under the port's lock, and only when its generation is
    above the last that landed there: sends to one port are serial, and an older snapshot
    that arrives late is dropped rather than undo a newer one (which holds its change). A
    DELETE draws one too, so a late PUT does not bring a port back. Other ports, and other
    hosts, do not wait. A failed send records nothing: the next push of the port is sent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gen = 0
        self._slots: dict[tuple[str, str], _Slot] = {}  # per (agent URL, tap) seen: small

    def draw(self) -> int:
        with self._lock:
            self._gen += 1
            return self._gen

    @contextlib.contextmanager
    def turn(self, agent: AgentClient, tap: str, gen: int) -> Iterator[bool]:
        """Hold the port: True when ``gen`` is newer than what landed there (send it then);
        it counts as landed when the block ends without an error."""
        with self._lock:
            slot = self._slots.setdefault((agent.url, tap), _Slot())
        with slot.lock:
            fresh = gen > slot.landed
            yield fresh
            if fresh:
                slot.landed = gen


_order = _PortOrder()


def push_nics(ctx: EngineContext, nic_ids: Iterable[str], host_id: str | None = None) -> None:
    """Push the ports of these NICs (those of VMs with a host) to their hosts' agents: the
    hosts at once (services/host_fanout.py), each host's ports in turn. A host that
    fails does not stop the others; the error raised at the end names each that failed.
    ``host_id``: to that host instead (a migration's target, before the guest moves)."""
    gen = _order.draw()  # before the read: see _PortOrder
    work: dict[str, list[tuple[str, PortBody]]] = {}
    with ctx.db.session() as s:
        addrs = _Addresses(ctx)
        for nic_id in sorted(set(nic_ids)):
            nic = s.get(Nic, nic_id)
            if nic is None:
                continue
            vm = s.get(Vm, nic.vm_id)
            net = s.get(Network, nic.network_id)
            on = host_id or (vm.host_id if vm is not None else None)
            if vm is None or on is None or net is None or not has_port(net):
                continue
            body = port_body(s, nic, net, addrs, s.get(Host, on))
            work.setdefault(on, []).append((tap_of(nic.mac), body))
        names = {h: (host.name if (host := s.get(Host, h)) else h) for h in work}

    def push_host(host_id: str) -> Callable[[AgentClient], None]:
        def push(agent: AgentClient) -> None:  # an error stops this host's next ports only
            for tap, body in work[host_id]:
                with _order.turn(agent, tap, gen) as fresh:
                    if fresh:
                        agent.set_port(tap, body)
        return push

    outcomes = host_fanout.each_host(ctx, [(h, push_host(h)) for h in work])
    failed = {names[o.host_id]: o.error for o in outcomes if o.error is not None}
    if failed:
        raise _push_failed(failed)


def _push_failed(failed: dict[str, CorralError]) -> CorralError:
    """One error for the hosts that failed: the kind of theirs when they share it (a 502 of
    an agent stays one), each host named with what it said."""
    kinds = {type(exc) for exc in failed.values()}
    kind = kinds.pop() if len(kinds) == 1 else HostError
    said = {name: exc.message for name, exc in failed.items()}
    if len(failed) == 1:
        [(name, exc)] = failed.items()
        return kind(f"ports of host {name} could not be set: {exc.message}", field=exc.field,
                    **{**exc.details, "failed_hosts": said})
    return kind(f"ports of {len(failed)} hosts could not be set: "
                + "; ".join(f"{n}: {m}" for n, m in sorted(said.items())),
                failed_hosts=said)


def affected(s: Session, sg_ids: Iterable[str]) -> set[str]:
    """NICs whose ports change when these groups change: their members, and members of
    groups with a rule naming one of them as remote group."""
    ids = set(sg_ids)
    referring = {g for (g,) in s.query(SgRule.sg_id).filter(SgRule.remote_group_id.in_(ids))}
    return {n for (n,) in s.query(NicSecurityGroup.nic_id)
            .filter(NicSecurityGroup.sg_id.in_(ids | referring))}


def push_groups(ctx: EngineContext, sg_ids: Iterable[str], also: Iterable[str] = ()) -> None:
    with ctx.db.session() as s:
        nic_ids = affected(s, sg_ids) | set(also)
    push_nics(ctx, nic_ids)


def push_vm(ctx: EngineContext, vm_id: str) -> None:
    """Push every port of a VM (create, start): also where it moved to another host."""
    with ctx.db.session() as s:
        nic_ids = [n.id for n in s.query(Nic).filter_by(vm_id=vm_id)]
        sg_ids = {m.sg_id for m in s.query(NicSecurityGroup)
                  .filter(NicSecurityGroup.nic_id.in_(nic_ids))}
        others = affected(s, sg_ids) - set(nic_ids)
    push_nics(ctx, nic_ids)
    with contextlib.suppress(CorralError):  # remote-group members learn its address
        push_nics(ctx, others)


def drop_ports(ctx: EngineContext, host_id: str, macs: Iterable[str]) -> None:
    """Forget ports on a host (NIC or VM gone); a host that is down keeps stale ones, which
    match no tap once the NIC is gone."""
    drop_ports_of(ctx.agent(host_id), macs)


def drop_ports_of(agent: AgentClient, macs: Iterable[str]) -> None:
    for mac in macs:
        tap = tap_of(mac)
        with contextlib.suppress(CorralError), _order.turn(agent, tap, _order.draw()) as fresh:
            if fresh:
                agent.delete_port(tap)


def vm_groups(s: Session, vm_id: str) -> tuple[list[str], set[str]]:
    """(MACs, group ids) of a VM's NICs, read before they are deleted."""
    nics = list(s.query(Nic).filter_by(vm_id=vm_id))
    ids = [n.id for n in nics]
    sg_ids = {m.sg_id for m in s.query(NicSecurityGroup)
              .filter(NicSecurityGroup.nic_id.in_(ids))} if ids else set()
    return [n.mac for n in nics], sg_ids


def after_vm_deleted(ctx: EngineContext, host_id: str | None, macs: list[str],
                     sg_ids: set[str]) -> None:
    """Remove the VM's ports and update the groups that used its addresses."""
    if host_id is not None:
        drop_ports(ctx, host_id, macs)
    if sg_ids:
        with contextlib.suppress(CorralError):
            push_groups(ctx, sg_ids)

