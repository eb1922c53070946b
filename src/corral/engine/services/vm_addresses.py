"""A VM's guest addresses: its network's DHCP lease (by MAC), the guest agent, the host's ARP table."""

from __future__ import annotations

from typing import Any

from corral.api import VmAddress
from corral.engine.context import EngineContext
from corral.engine.db.models import Network, Vm
from corral.errors import CorralError, NotFound


def addresses(ctx: EngineContext, name: str) -> list[VmAddress]:
    """DHCP leases first (what dnsmasq gave the VM's MAC), then what libvirt sees; no duplicates.

    A guest with a static address and no guest agent shows up once it has sent traffic
    (ARP); the guest agent's answer adds the guest's own interface names.
    """
    with ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name=name).one_or_none()
        if vm is None:
            raise NotFound(f"VM {name} not found")
        net = s.get(Network, vm.network_id) if vm.network_id else None
        mac, host_id, net_name = (vm.mac or "").lower(), vm.host_id, net.name if net else None
    if host_id is None:
        return []
    agent = ctx.agent(host_id)
    found: list[VmAddress] = []
    if net_name is not None and mac:
        leases: list[dict[str, Any]] = agent.call("GET", f"/v1/networks/{net_name}/leases", timeout=10)
        for lease in leases:
            if str(lease.get("mac", "")).lower() == mac:
                found.append(VmAddress(ip=str(lease["ip"]), mac=mac, source="dhcp"))
    try:
        seen = agent.addresses(name)
    except CorralError:  # e.g. the domain is gone: the lease is all there is
        seen = []
    for addr in seen:
        ip = str(addr.get("ip") or "")
        if not ip or ip.startswith("127.") or ip == "::1":
            continue
        item = VmAddress(ip=ip, prefix=addr.get("prefix"), mac=(addr.get("mac") or None),
                         interface=addr.get("interface"), source=str(addr.get("source")))
        if item.mac and mac and item.mac.lower() != mac and item.source == "arp":
            continue
        known = next((a for a in found if a.ip == ip), None)
        if known is None:
            found.append(item)
        elif known.interface is None and item.interface:
            known.interface, known.prefix = item.interface, item.prefix
    return found
