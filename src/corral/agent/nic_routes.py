"""Agent routes of NICs: hot-plug into domains, and a network's static DHCP leases.

``POST /v1/domains/{name}/nics/attach|detach`` plug an engine-designed ``<interface>`` in or
out (corral.agent.hypervisor.nics); ``PUT /v1/networks/{name}/reservations`` replaces the
network's ``dhcp-host`` entries (corral.agent.network.dnsmasq.set_reservations).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter

from corral.agent.hypervisor import Hypervisor
from corral.agent.hypervisor.nics import NicOps
from corral.agent.network import NetworkSpec, dnsmasq
from corral.agent_api.networks import ReservationsBody, ReservationsSet
from corral.agent_api.ports import NicAttachBody, NicDetachBody, NicInfo, NicPlugged
from corral.errors import InvalidInput


def router(hv: Hypervisor, spec_of: Callable[[str], NetworkSpec], net_dir: Path,
           after_plug: Callable[[], None] = lambda: None) -> APIRouter:
    """``after_plug`` runs after a NIC is plugged in (its tap exists: OVS flows)."""
    r = APIRouter()
    nics = NicOps(hv)

    @r.get("/v1/domains/{name}/nics")
    def domain_nics(name: str) -> list[NicInfo]:
        return [NicInfo.model_validate(n) for n in nics.list(name)]

    @r.post("/v1/domains/{name}/nics/attach")
    def attach(name: str, body: NicAttachBody) -> NicPlugged:
        out = NicPlugged.model_validate(nics.attach(name, body.xml))
        after_plug()
        return out

    @r.post("/v1/domains/{name}/nics/detach")
    def detach(name: str, body: NicDetachBody) -> NicPlugged:
        return NicPlugged.model_validate(nics.detach(name, body.mac))

    @r.put("/v1/networks/{name}/reservations")
    def set_reservations(name: str, body: ReservationsBody) -> ReservationsSet:
        spec = spec_of(name)  # NotFound when the network is not built here
        if not spec.subnet or not spec.dhcp_start:
            if body.reservations:
                raise InvalidInput(f"network {name} has no DHCP server", field="ip")
            return ReservationsSet(changed=False)
        entries = [(e.mac, e.ip, e.name) for e in body.reservations]
        try:
            changed = dnsmasq.set_reservations(spec, net_dir, entries)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="reservations") from exc
        return ReservationsSet(changed=changed)

    @r.get("/v1/networks/{name}/reservations")
    def reservations(name: str) -> list[dict[str, str]]:
        return dnsmasq.reservations(spec_of(name), net_dir)

    return r
