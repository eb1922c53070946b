"""Calls of networks (``corral.agent_api.networks``)."""

from __future__ import annotations

from corral.agent_api import Deleted, Ok
from corral.agent_api.networks import (
    Lease,
    NetworkBody,
    NetworkStatus,
    ReservationEntry,
    ReservationsBody,
    ReservationsSet,
)
from corral.engine.agent_calls import AgentCalls


class NetworkCalls(AgentCalls):
    def ensure_network(self, name: str, body: NetworkBody) -> NetworkStatus:
        # Building a bridge, dnsmasq and rules (OVS, VXLAN) may take a while on a busy host.
        return self._send("PUT", f"/v1/networks/{name}", NetworkStatus, body, timeout=120)

    def delete_network(self, name: str) -> Deleted:
        return self._send("DELETE", f"/v1/networks/{name}", Deleted, timeout=120)

    def network_status(self, name: str) -> NetworkStatus:
        return self._send("GET", f"/v1/networks/{name}", NetworkStatus, timeout=10)

    def check_network(self, name: str, body: NetworkBody) -> Ok:
        """The host's dry run: its routes and interface names; an error if it would fail."""
        return self._send("POST", f"/v1/networks/{name}/check", Ok, body, timeout=30)

    def network_leases(self, name: str, timeout: float = 10) -> list[Lease]:
        return self._send_list("GET", f"/v1/networks/{name}/leases", Lease, timeout=timeout)

    def set_reservations(self, name: str,
                         entries: list[ReservationEntry]) -> ReservationsSet:
        return self._send("PUT", f"/v1/networks/{name}/reservations", ReservationsSet,
                          ReservationsBody(reservations=entries), timeout=30)
