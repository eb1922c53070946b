"""Agent routes that reach into a running guest through its QEMU guest agent, and the
running domain's displays (the protocol: corral.agent_api.domains)."""

from __future__ import annotations

from fastapi import APIRouter

from corral.agent.hypervisor import Hypervisor
from corral.agent_api.domains import GraphicsInfo, GuestAgentStatus, GuestExecBody, GuestExecResult


def router(hv: Hypervisor) -> APIRouter:
    r = APIRouter()

    @r.get("/v1/domains/{name}/guest-agent")
    def guest_agent(name: str) -> GuestAgentStatus:
        return GuestAgentStatus(answers=hv.guest_agent_answers(name))

    @r.post("/v1/domains/{name}/guest-agent/exec")
    def guest_exec(name: str, body: GuestExecBody) -> GuestExecResult:
        return GuestExecResult.model_validate(
            hv.guest_exec(name, body.command, body.stdin, body.timeout))

    @r.get("/v1/domains/{name}/graphics")
    def graphics(name: str) -> list[GraphicsInfo]:
        return [GraphicsInfo.model_validate(g) for g in hv.graphics(name)]

    return r
