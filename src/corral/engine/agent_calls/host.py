"""Calls of the host as a whole (``corral.agent_api.host``): its memory, KSM, its power."""

from __future__ import annotations

from corral.agent_api.host import HostMemory, KsmBody, PowerAnswer, PowerBody
from corral.agent_api.stats import StatsAnswer
from corral.engine.agent_calls import AgentCalls


class HostCalls(AgentCalls):
    def memory(self) -> HostMemory:
        return self._send("GET", "/v1/host/memory", HostMemory, timeout=10)

    def set_ksm(self, on: bool) -> HostMemory:
        return self._send("PUT", "/v1/host/ksm", HostMemory, KsmBody(on=on), timeout=30)

    def power_state(self) -> PowerAnswer:
        """The agent's start id now (another one: it started again since)."""
        return self._send("GET", "/v1/host/power", PowerAnswer, timeout=5)

    def power(self, action: str) -> PowerAnswer:
        """Reboot or power off the machine (a moment after this answers)."""
        return self._send("POST", "/v1/host/power", PowerAnswer, PowerBody(action=action),
                          timeout=10)

    def host_stats(self, since: float | None) -> StatsAnswer:
        """The host's recent samples (corral.agent.vm_stats), after ``since``."""
        return self._send("GET", "/v1/stats/host" + _since(since), StatsAnswer, timeout=10)

    def domain_stats(self, name: str, since: float | None) -> StatsAnswer:
        return self._send("GET", f"/v1/stats/domains/{name}" + _since(since), StatsAnswer,
                          timeout=10)


def _since(since: float | None) -> str:
    return "" if since is None else f"?since={since}"
