"""Agent routes of ports (a NIC's tap): anti-spoofing and security group rules.

``PUT /v1/ports/{tap}`` sets a port (idempotent: the whole per-NIC ruleset), ``DELETE``
forgets it, ``GET`` shows it with its addresses (static and learned from DHCP). The rules
live in corral.agent.network.firewall (nftables; OpenFlow flows for ports of OVS networks,
corral.agent.network.ovs_flows); ports are kept on disk and re-applied at agent start.
The protocol: corral.agent_api.ports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter

from corral.agent.network import NetworkSpec, dnsmasq, firewall
from corral.agent_api import Deleted
from corral.agent_api.ports import PortBody, PortInfo, PortSet
from corral.errors import CorralError


def make_firewall(state_dir: Path, spec_of: Callable[[str], NetworkSpec],
                  net_dir: Path) -> firewall.Firewall:
    def leases(name: str) -> list[tuple[str, str]]:
        try:
            return [(lease.mac, lease.ip) for lease in dnsmasq.leases(spec_of(name), net_dir)]
        except CorralError:
            return []

    def on_ovs(name: str) -> bool:
        return spec_of(name).backend == "ovs"

    return firewall.Firewall(state_dir / "ports", leases, on_ovs,
                             firewall.SgTables.for_state_dir(state_dir))


def router(fw: firewall.Firewall) -> APIRouter:
    r = APIRouter()

    @r.put("/v1/ports/{tap}")
    def put_port(tap: str, body: PortBody) -> PortSet:
        port = fw.apply(firewall.parse_port(tap, body.model_dump()))
        return PortSet(tap=port.tap, id=port.id)

    @r.delete("/v1/ports/{tap}")
    def delete_port(tap: str) -> Deleted:
        return Deleted(deleted=fw.remove(firewall.check_tap(tap)))

    @r.get("/v1/ports/{tap}")
    def get_port(tap: str) -> PortInfo:
        return PortInfo.model_validate(fw.get(firewall.check_tap(tap)))

    return r
