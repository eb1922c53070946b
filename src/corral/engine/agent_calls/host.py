"""Calls of the host as a whole (``corral.agent_api.host``): its memory, KSM."""

from __future__ import annotations

from corral.agent_api.host import HostMemory, KsmBody
from corral.engine.agent_calls import AgentCalls


class HostCalls(AgentCalls):
    def memory(self) -> HostMemory:
        return self._send("GET", "/v1/host/memory", HostMemory, timeout=10)

    def set_ksm(self, on: bool) -> HostMemory:
        return self._send("PUT", "/v1/host/ksm", HostMemory, KsmBody(on=on), timeout=30)
