"""The agent's routes of the host as a whole: its memory (KSM, balloons) and its power."""

from __future__ import annotations

from fastapi import APIRouter

from corral.agent import host_memory, host_power
from corral.agent.hypervisor import Hypervisor
from corral.agent_api.host import HostMemory, KsmBody, PowerAnswer, PowerBody


def router(hv: Hypervisor, power_commands: dict[str, list[str]]) -> APIRouter:
    """``power_commands``: the command of each power action (reboot, poweroff)."""
    r = APIRouter()

    @r.get("/v1/host/power")
    def power_state() -> PowerAnswer:
        return PowerAnswer(start_id=host_power.START_ID)

    @r.post("/v1/host/power")
    def power(body: PowerBody) -> PowerAnswer:
        command = power_commands[body.action]
        host_power.run_later(command)
        return PowerAnswer(start_id=host_power.START_ID, command=command)

    @r.get("/v1/host/memory")
    def memory() -> HostMemory:
        return host_memory.report(hv)

    @r.put("/v1/host/ksm")
    def ksm(body: KsmBody) -> HostMemory:
        host_memory.set_ksm(body.on)
        return host_memory.report(hv)

    return r
