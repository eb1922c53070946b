"""The agent's routes of the host as a whole: its memory (KSM, balloons)."""

from __future__ import annotations

from fastapi import APIRouter

from corral.agent import host_memory
from corral.agent.hypervisor import Hypervisor
from corral.agent_api.host import HostMemory, KsmBody


def router(hv: Hypervisor) -> APIRouter:
    r = APIRouter()

    @r.get("/v1/host/memory")
    def memory() -> HostMemory:
        return host_memory.report(hv)

    @r.put("/v1/host/ksm")
    def ksm(body: KsmBody) -> HostMemory:
        host_memory.set_ksm(body.on)
        return host_memory.report(hv)

    return r
