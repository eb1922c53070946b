"""/api/v1/vms/{name}/exec and /vnc: into a running guest (its QEMU guest agent) and to its
display."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api import VmExec, VmExecResult, VmVnc
from corral.engine.context import EngineContext
from corral.engine.routes.deps import VmName, authenticated, context, need
from corral.engine.services import vm_guest_agent

router = APIRouter(prefix="/api/v1/vms", tags=["vms"], dependencies=[Depends(authenticated)])


@router.post("/{name}/exec", dependencies=need("vm.exec"), response_model=VmExecResult)
def exec_command(name: VmName, req: VmExec, ctx: EngineContext = Depends(context)) -> VmExecResult:
    """Run a command in the guest through its QEMU guest agent and wait for it (at most
    ``timeout`` s): exit code, stdout, stderr. 409 when the VM does not run or no guest
    agent answers in it."""
    return vm_guest_agent.exec_command(ctx, name, req)


@router.get("/{name}/vnc", dependencies=need("vm.console"), response_model=VmVnc)
def vnc(name: VmName, ctx: EngineContext = Depends(context)) -> VmVnc:
    """Where the running VM's VNC display listens (its host's loopback: reach it through an
    SSH tunnel to that host, e.g. ``ssh -L 5901:127.0.0.1:PORT HOST``)."""
    return vm_guest_agent.vnc(ctx, name)
