"""NICs of VMs: ``corral vm nic add|remove|list``, hot-plugged into running VMs, and IPAM.

Every NIC is a row of ``nics`` (VM, network, MAC, optional static IP, index). The first NIC
(index 0) is the one ``vm create`` makes (the VM's ``network`` and ``mac`` in the API), and it
cannot be removed. MACs are unique in the cluster (one table, one
unique constraint; generated ones are drawn from 52:54:00:xx:xx:xx avoiding every MAC in use).

IPAM rule: a static IP (``--ip``) must lie in the network's subnet, must not be its network,
broadcast or gateway address, must lie *outside* the dynamic DHCP range (so dnsmasq can never
have handed it to someone else), and must not be another NIC's (409). It becomes a
``dhcp-host=MAC,IP,NAME`` reservation in the network's dnsmasq on every host (a hosts file
re-read on SIGHUP), pushed whenever a NIC with an address comes or goes; ``net show`` lists
the reservations and ``vm ip`` the addresses.

Add and remove lock the VM (they serialize with its power operations) and the network (its
static leases are pushed one change at a time) and mark the NIC ``attaching``/``detaching``
meanwhile. MACs and static IPs are claimed by the unique constraints of ``nics``: of two
requests for one, the second gets a 409 (engine/db/claims.py), never a 500. A running VM
gets the NIC at once (libvirt hot-plug, LIVE) and in its definition (CONFIG); a stopped VM
in its definition only. The designer includes every NIC whenever it designs the VM's
domain: :func:`nic_specs` is the hook services/vm_design.py ``domain_xml`` calls.

Every NIC's host tap is named ``cv`` + its MAC's 12 hex digits (``<target dev>``), so the
host's agent can filter it by name: anti-spoofing and security groups (services/
security_groups.py pushes the NIC's *port*; ``vm nic update`` changes its groups live). QoS:
``inbound_kbps``/``outbound_kbps`` on the row become the interface's ``<bandwidth>`` (average,
KiB/s), set when the NIC is added.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import random

from sqlalchemy.orm import Session

from corral.agent_api.networks import ReservationEntry
from corral.api import NicCreate, NicUpdate, Operation, VmNic
from corral.api.nics import normalize_mac
from corral.domainxml import NicSpec, design_nic, tap_of
from corral.engine import projects
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host, Network, Nic, NicSecurityGroup, SecurityGroup, Vm
from corral.engine.operations import OpContext
from corral.engine.services import host_fanout, networks, op_undo
from corral.engine.services import security_groups as sgs
from corral.engine.services.vm_lookup import check_device_change, find_vm
from corral.errors import (
    Conflict,
    CorralError,
    InvalidInput,
    NotFound,
    Unavailable,
)

ATTACHING, DETACHING, READY = "attaching", "detaching", "ready"


# -- rows, MACs and the hook of the designer ------------------------------------------------

def nic_rows(s: Session, vm: Vm) -> list[Nic]:
    """The VM's NICs by index."""
    return list(s.query(Nic).filter_by(vm_id=vm.id).order_by(Nic.idx))


def first_nic(s: Session, vm_id: str) -> tuple[Nic, Network] | None:
    """The VM's first NIC and its network (what the API shows as the VM's network/mac)."""
    row = s.query(Nic).filter_by(vm_id=vm_id).order_by(Nic.idx).first()
    net = s.get(Network, row.network_id) if row is not None else None
    return (row, net) if row is not None and net is not None else None


def nic_specs(s: Session, vm: Vm) -> list[NicSpec]:
    """Every NIC of ``vm`` as the designer's NicSpec, in index order (services/vms.py
    ``domain_xml``). NICs being removed are still designed until they are gone."""
    out = []
    qos = sgs.qos_in_xml(s.get(Host, vm.host_id) if vm.host_id else None)
    for row in nic_rows(s, vm):
        net = s.get(Network, row.network_id)
        if net is not None:
            out.append(nic_spec(net, row, qos))
    return out


def nic_spec(net: Network, row: Nic, qos: bool = True) -> NicSpec:
    """The network's NicSpec with the NIC's own: its tap name, and its QoS as libvirt's
    ``<bandwidth>`` where the host's kernel has what libvirt needs (``qos``; else the
    host's agent polices the tap with nftables: the port's rates)."""
    spec = dataclasses.replace(networks.nic_spec(net, row.mac), target=tap_of(row.mac))
    if not qos:
        return spec
    return dataclasses.replace(spec, inbound_kbps=row.inbound_kbps,
                               outbound_kbps=row.outbound_kbps)


def new_mac(s: Session) -> str:
    """A 52:54:00:xx:xx:xx MAC that no VM and no NIC of the cluster uses."""
    used = {m for (m,) in s.query(Nic.mac)}
    for _ in range(1000):
        mac = "52:54:00:{:02x}:{:02x}:{:02x}".format(*(random.randrange(256) for _ in range(3)))
        if mac not in used:
            return mac
    raise Conflict("no free MAC address found", field="mac")


def mac_owner(s: Session, mac: str) -> str | None:
    vm_id = s.query(Nic.vm_id).filter_by(mac=mac).scalar()
    if vm_id is None:
        return None
    vm = s.get(Vm, vm_id)
    return vm.name if vm else str(vm_id)


def check_ip(s: Session, net: Network, ip: str) -> str:
    """The IPAM rule (module docstring): a 4xx naming ``ip`` when the address cannot be."""
    if not net.subnet or not net.dhcp_start or not net.dhcp_end:
        raise InvalidInput(f"network {net.name} has no DHCP server (bridge mode): a static "
                           "address is the guest's own business there", field="ip")
    addr = ipaddress.IPv4Address(ip)
    subnet = ipaddress.IPv4Network(net.subnet, strict=False)
    if addr not in subnet:
        raise InvalidInput(f"ip {addr} is outside network {net.name}'s subnet {subnet}",
                           field="ip")
    if addr in (subnet.network_address, subnet.broadcast_address):
        raise InvalidInput(f"ip {addr} is the network or broadcast address of {subnet}",
                           field="ip")
    if net.gateway and addr == ipaddress.IPv4Address(net.gateway):
        raise InvalidInput(f"ip {addr} is network {net.name}'s gateway", field="ip")
    start, end = ipaddress.IPv4Address(net.dhcp_start), ipaddress.IPv4Address(net.dhcp_end)
    if start <= addr <= end:
        raise InvalidInput(f"ip {addr} is inside network {net.name}'s dynamic DHCP range "
                           f"{start}-{end}: pick a static address outside it", field="ip")
    other = s.query(Nic).filter_by(network_id=net.id, ip=str(addr)).first()
    if other is not None:
        owner = s.get(Vm, other.vm_id)
        who = owner.name if owner else other.vm_id
        raise Conflict(f"ip {addr} on network {net.name} is already VM {who}'s (NIC "
                       f"{other.mac})", field="ip", vm=who)
    return str(addr)


def _label(vm_name: str, idx: int) -> str:
    """The DHCP host name of a NIC: the VM's name in its project (a DNS label), ``-N`` for
    NIC N > 0. Two projects' VMs of one name on a network they share answer to one name."""
    base = projects.bare_name(vm_name).replace("_", "-").strip("-")[:58] or "vm"
    return base if idx == 0 else f"{base}-{idx}"


def reservations_of(s: Session, net_id: str) -> list[tuple[str, str, str]]:
    """(mac, ip, dhcp host name) of every NIC with a static IP on the network."""
    out = []
    for nic, vm in (s.query(Nic, Vm).join(Vm, Nic.vm_id == Vm.id)
                    .filter(Nic.network_id == net_id, Nic.ip.isnot(None)).order_by(Nic.ip)):
        out.append((nic.mac, str(nic.ip), _label(vm.name, nic.idx)))
    return out


def push_reservations(ctx: EngineContext, net_id: str) -> None:
    """Give every host's dnsmasq of the network the current static leases."""
    with ctx.db.session() as s:
        net = s.get(Network, net_id)
        if net is None or not net.subnet or not net.dhcp_start:
            return
        name = net.name
        entries = [ReservationEntry(mac=m, ip=ip, name=n)
                   for m, ip, n in reservations_of(s, net_id)]
        host_ids = [h.id for h in s.query(Host)]
    outcomes = host_fanout.each_host(
        ctx, [(h, lambda agent: agent.set_reservations(name, entries)) for h in host_ids])
    host_fanout.answers(outcomes, missing_ok=True)  # missing: the network is not built there


# -- reading -------------------------------------------------------------------------------

def _to_api(s: Session, row: Nic) -> VmNic:
    net = s.get(Network, row.network_id)
    groups = sgs.group_names(s, row.id) if row.id else []
    return VmNic(index=row.idx, mac=row.mac, network=net.name if net else "?", ip=row.ip,
                 status=row.status or READY, primary=row.idx == 0, security_groups=groups,
                 inbound_kbps=row.inbound_kbps, outbound_kbps=row.outbound_kbps)


def list_nics(ctx: EngineContext, vm_name: str) -> list[VmNic]:
    with ctx.db.session() as s:
        vm = find_vm(s, vm_name)
        return [_to_api(s, r) for r in nic_rows(s, vm)]


# -- add -----------------------------------------------------------------------------------

def add(ctx: EngineContext, vm_name: str, req: NicCreate) -> Operation:
    """Check everything first (VM, network, MAC, IP): a refused request leaves nothing."""
    with ctx.db.session() as s:
        vm = find_vm(s, vm_name)
        check_device_change(vm, "add a NIC to", "NICs")
        net = s.query(Network).filter_by(name=req.network).one_or_none()
        if net is None:
            raise NotFound(f"network {req.network} not found", field="network")
        projects.check_usable(net, vm.project, "network")
        claims.hold(s, net)  # a delete of the network at the same moment
        networks.check_usable(net)
        if req.mac is not None:
            owner = mac_owner(s, req.mac)
            if owner is not None:
                raise Conflict(f"MAC {req.mac} is already used by VM {owner}", field="mac",
                               vm=owner)
        ip = check_ip(s, net, req.ip) if req.ip is not None else None
        groups = sgs.resolve(s, req.security_groups, net)
        for g in groups:
            projects.check_usable(g, vm.project, "security_groups")
        if (req.inbound_kbps or req.outbound_kbps) and net.backend == "ovs" and \
                not sgs.qos_in_xml(s.get(Host, vm.host_id)):
            raise Unavailable("this host's kernel lacks the tc parts libvirt's <bandwidth> "
                              "needs, and nftables cannot police Open vSwitch ports: no QoS "
                              f"on network {net.name}", field="inbound_kbps")
        rows = nic_rows(s, vm)
        mac = req.mac or new_mac(s)
        nic = Nic(vm_id=vm.id, network_id=net.id, mac=mac, ip=ip,
                  idx=max((r.idx for r in rows), default=-1) + 1, status=ATTACHING,
                  inbound_kbps=req.inbound_kbps, outbound_kbps=req.outbound_kbps)
        s.add(nic)
        with claims.unique(f"MAC {mac} or ip {ip} on network {net.name} was just taken by "
                           "another request", field="ip" if ip else "mac"):
            s.flush()
        sgs.set_groups(s, nic.id, groups)
        params = {"vm_id": vm.id, "nic_id": nic.id}
        host_id = vm.host_id
    return ctx.ops.submit("vm.nic_add", {"vms": [vm_name], "networks": [req.network]},
                          params, [f"vm:{vm_name}", f"network:{req.network}"], host_id=host_id)


def _load(ctx: EngineContext, op: OpContext) -> tuple[str, str, Nic, Network] | None:
    with ctx.db.session() as s:
        vm = s.get(Vm, op.params["vm_id"])
        nic = s.get(Nic, op.params["nic_id"])
        if vm is None or nic is None or nic.vm_id != vm.id or vm.host_id is None:
            return None
        net = s.get(Network, nic.network_id)
        assert net is not None
        s.expunge_all()
        return vm.name, vm.host_id, nic, net


def _set_status(ctx: EngineContext, nic_id: str, status: str) -> None:
    with ctx.db.session() as s:
        nic = s.get(Nic, nic_id)
        if nic is not None:
            nic.status = status


def _forget(ctx: EngineContext, nic_id: str) -> None:
    with ctx.db.session() as s:
        nic = s.get(Nic, nic_id)
        if nic is not None:
            s.delete(nic)


def execute_add(ctx: EngineContext, op: OpContext) -> None:
    loaded = _load(ctx, op)
    if loaded is None:
        return
    vm_name, host_id, nic, net = loaded
    agent = ctx.agent(host_id)
    try:
        if nic.ip is not None:  # before the plug: the guest's first DHCP request gets it
            op.progress(20, f"reserving {nic.ip} for {nic.mac} on network {net.name}")
            push_reservations(ctx, net.id)
        op.progress(40, f"filtering NIC {nic.mac} (anti-spoofing, security groups)")
        sgs.push_nics(ctx, [nic.id])  # before the plug: no moment without its rules
        op.progress(50, f"plugging NIC {nic.mac} on network {net.name} into VM {vm_name}")
        with ctx.db.session() as s:
            qos = sgs.qos_in_xml(s.get(Host, host_id))
        xml = design_nic(nic_spec(net, nic, qos)).to_xml()
        agent.attach_nic(vm_name, xml, timeout=120)
    except CorralError:
        with contextlib.suppress(CorralError):  # nothing half-plugged stays behind
            agent.detach_nic(vm_name, nic.mac, timeout=120)
        sgs.drop_ports(ctx, host_id, [nic.mac])
        _forget(ctx, nic.id)
        if nic.ip is not None:
            with contextlib.suppress(CorralError):
                push_reservations(ctx, net.id)
        raise
    _set_status(ctx, nic.id, READY)
    with ctx.db.session() as s:
        sg_ids = [m.sg_id for m in s.query(NicSecurityGroup).filter_by(nic_id=nic.id)]
    with contextlib.suppress(CorralError):  # remote-group rules naming its groups
        sgs.push_groups(ctx, sg_ids)
    ctx.bus.publish("vm", {"name": vm_name, "nic": nic.mac, "status": READY})


# -- remove --------------------------------------------------------------------------------

def remove(ctx: EngineContext, vm_name: str, mac: str) -> Operation:
    try:
        mac = normalize_mac(mac)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="mac") from exc
    with ctx.db.session() as s:
        vm = find_vm(s, vm_name)
        check_device_change(vm, "remove a NIC from", "NICs")
        row = next((r for r in nic_rows(s, vm) if r.mac == mac), None)
        if row is None:
            raise NotFound(f"VM {vm_name} has no NIC {mac}", field="mac")
        if row.idx == 0:
            raise Conflict(f"NIC {mac} is VM {vm_name}'s first NIC (made with the VM); it "
                           "stays for the VM's life", field="mac")
        if row.status != READY:
            raise Conflict(f"NIC {mac} is {row.status}", field="mac")
        row.status = DETACHING
        params = {"vm_id": vm.id, "nic_id": row.id}
        net = s.get(Network, row.network_id)
        locks = [f"vm:{vm_name}"] + ([f"network:{net.name}"] if net else [])
        host_id = vm.host_id
    return ctx.ops.submit("vm.nic_remove", {"vms": [vm_name]}, params, locks, host_id=host_id)


def execute_remove(ctx: EngineContext, op: OpContext) -> None:
    loaded = _load(ctx, op)
    if loaded is None:
        return
    vm_name, host_id, nic, net = loaded
    op.progress(30, f"unplugging NIC {nic.mac} from VM {vm_name}")
    try:
        ctx.agent(host_id).detach_nic(vm_name, nic.mac, timeout=180)
    except NotFound:
        pass  # no domain: the NIC is plugged into nothing
    except CorralError:
        _set_status(ctx, nic.id, READY)  # still plugged in: the error says why
        raise
    sgs.drop_ports(ctx, host_id, [nic.mac])
    with ctx.db.session() as s:
        sg_ids = [m.sg_id for m in s.query(NicSecurityGroup).filter_by(nic_id=nic.id)]
    _forget(ctx, nic.id)
    with contextlib.suppress(CorralError):  # its address leaves remote-group rules
        sgs.push_groups(ctx, sg_ids)
    if nic.ip is not None:
        push_reservations(ctx, net.id)
    ctx.bus.publish("vm", {"name": vm_name, "nic": nic.mac, "status": "removed"})


# -- update (security groups, live) ---------------------------------------------------------

def update(ctx: EngineContext, vm_name: str, mac: str, req: NicUpdate) -> VmNic:
    """Change a NIC's security groups; applied to its host before the answer (no restart).
    A failed push puts the previous groups back (and pushes them again)."""
    try:
        mac = normalize_mac(mac)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="mac") from exc
    if req.security_groups is None:
        with ctx.db.session() as s:
            row = next((r for r in nic_rows(s, find_vm(s, vm_name)) if r.mac == mac), None)
            if row is None:
                raise NotFound(f"VM {vm_name} has no NIC {mac}", field="mac")
            return _to_api(s, row)
    with sgs.membership_change(mac):
        with ctx.db.session() as s:
            vm = find_vm(s, vm_name)
            rows = nic_rows(s, vm)
            row = next((r for r in rows if r.mac == mac), None)
            if row is None:
                raise NotFound(f"VM {vm_name} has no NIC {mac}", field="mac")
            if row.status != READY:
                raise Conflict(f"NIC {mac} is {row.status}", field="mac")
            net = s.get(Network, row.network_id)
            assert net is not None
            groups = sgs.resolve(s, req.security_groups, net)
            before = sgs.set_groups(s, row.id, groups)
            nic_id, changed = row.id, set(before) | {g.id for g in groups}
        try:
            sgs.push_groups(ctx, changed, also=[nic_id])
        except CorralError:
            with ctx.db.session() as s:
                sgs.set_groups(s, nic_id, [g for g in (s.get(SecurityGroup, i) for i in before)
                                           if g is not None])
            with contextlib.suppress(CorralError):
                sgs.push_groups(ctx, changed, also=[nic_id])
            raise
        with ctx.db.session() as s:
            nic = s.get(Nic, nic_id)
            assert nic is not None
            return _to_api(s, nic)


def static_networks(s: Session, vm_id: str) -> list[str]:
    """Names of the networks where the VM's NICs hold static IPs (reservations to push
    again when they go)."""
    rows = (s.query(Network.name).join(Nic, Nic.network_id == Network.id)
            .filter(Nic.vm_id == vm_id, Nic.ip.isnot(None)).distinct())
    return sorted(n for (n,) in rows)


def forget_vm(s: Session, vm_id: str) -> list[str]:
    """Delete a VM's NIC rows (the VM is being deleted); the networks whose reservations
    changed (push them with :func:`push_reservations` after the commit)."""
    changed: set[str] = set()
    for nic in s.query(Nic).filter_by(vm_id=vm_id):
        if nic.ip is not None:
            changed.add(nic.network_id)
        s.delete(nic)
    return sorted(changed)


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.nic_add", lambda op: execute_add(ctx, op),
                     undo=op_undo.delete_row(ctx, Nic, "nic_id"))
    ctx.ops.register("vm.nic_remove", lambda op: execute_remove(ctx, op),
                     undo=op_undo.set_fields(ctx, Nic, "nic_id", status=READY))
