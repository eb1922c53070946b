"""A VM's guest addresses: its network's DHCP lease (by MAC), the guest agent, the host's ARP table."""

from __future__ import annotations

from corral.agent_api.networks import Lease
from corral.api import VmAddress
from corral.engine.context import EngineContext
from corral.engine.db.models import Network
from corral.engine.services import vm_nics
from corral.engine.services.vm_lookup import find_vm
from corral.errors import CorralError


def addresses(ctx: EngineContext, name: str) -> list[VmAddress]:
    """DHCP leases first (what dnsmasq gave the VM's MAC), then what libvirt sees; no duplicates.

    A guest with a static address and no guest agent shows up once it has sent traffic
    (ARP); the guest agent's answer adds the guest's own interface names.
    """
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        nics: list[tuple[str, str, str | None]] = []  # (mac, network, static ip) of each NIC
        for row in vm_nics.nic_rows(s, vm):
            net = s.get(Network, row.network_id)
            if net is not None:
                nics.append((row.mac.lower(), net.name, row.ip))
        host_id = vm.host_id
    if host_id is None:
        return []
    agent = ctx.agent(host_id)
    found: list[VmAddress] = []
    macs = {m for m, _, _ in nics}
    leases_of: dict[str, list[Lease]] = {}
    for mac, net_name, static in nics:
        if net_name not in leases_of:
            leases_of[net_name] = agent.network_leases(net_name)
        leased = [x.ip for x in leases_of[net_name] if x.mac.lower() == mac]
        found.extend(VmAddress(ip=ip, mac=mac, source="dhcp") for ip in leased)
        if static is not None and static not in leased:  # reserved, not asked for (yet)
            found.append(VmAddress(ip=static, mac=mac, source="reserved"))
    try:
        seen = agent.addresses(name)
    except CorralError:  # e.g. the domain is gone: the lease is all there is
        seen = []
    for addr in seen:
        ip = addr.ip or ""
        if not ip or ip.startswith("127.") or ip == "::1":
            continue
        item = VmAddress(ip=ip, prefix=addr.prefix, mac=addr.mac or None,
                         interface=addr.interface, source=addr.source)
        if item.mac and item.mac.lower() not in macs and item.source == "arp":
            continue
        known = next((a for a in found if a.ip == ip), None)
        if known is None:
            found.append(item)
        elif known.interface is None and item.interface:
            known.interface, known.prefix = item.interface, item.prefix
    return found
