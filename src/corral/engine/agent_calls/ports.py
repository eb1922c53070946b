"""Calls of ports and NIC hot-plug (``corral.agent_api.ports``)."""

from __future__ import annotations

from corral.agent_api import Deleted
from corral.agent_api.ports import (
    NicAttachBody,
    NicDetachBody,
    NicInfo,
    NicPlugged,
    PortBody,
    PortInfo,
    PortSet,
)
from corral.engine.agent_calls import AgentCalls


class PortCalls(AgentCalls):
    def set_port(self, tap: str, body: PortBody) -> PortSet:
        return self._send("PUT", f"/v1/ports/{tap}", PortSet, body, timeout=30)

    def port(self, tap: str) -> PortInfo:
        return self._send("GET", f"/v1/ports/{tap}", PortInfo, timeout=10)

    def delete_port(self, tap: str) -> Deleted:
        return self._send("DELETE", f"/v1/ports/{tap}", Deleted, timeout=30)

    def nics(self, vm: str) -> list[NicInfo]:
        return self._send_list("GET", f"/v1/domains/{vm}/nics", NicInfo, timeout=10)

    def attach_nic(self, vm: str, xml: str, timeout: float = 120) -> NicPlugged:
        return self._send("POST", f"/v1/domains/{vm}/nics/attach", NicPlugged,
                          NicAttachBody(xml=xml), timeout=timeout)

    def detach_nic(self, vm: str, mac: str, timeout: float = 180) -> NicPlugged:
        # The agent waits for the guest to let go of the NIC (up to 60 s): leave it room.
        return self._send("POST", f"/v1/domains/{vm}/nics/detach", NicPlugged,
                          NicDetachBody(mac=mac), timeout=timeout)
