"""What the engine asks a running guest through its host's agent: whether the QEMU guest
agent answers (`vm show`), a command run by it (`vm exec`), and where the VM's VNC display
listens (`vm vnc`).

Only single-VM reads ask the host: the VM list stays a database read.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from corral.agent_api.domains import GuestExecBody
from corral.api import Vm as VmOut
from corral.api import VmExec, VmExecResult, VmState, VmVnc
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.engine.services.vm_lookup import find_vm
from corral.errors import CorralError, WrongState

_ASKED = (VmState.RUNNING, VmState.PAUSED)  # a paused guest's agent cannot answer: False


def with_agent_status(ctx: EngineContext, vm: VmOut) -> VmOut:
    """``vm`` with ``guest_agent`` filled in: None unless it runs (or when its host cannot
    be asked now: `vm show` still answers, and at once for a host that is not `up` rather
    than after a connection's timeout)."""
    if vm.state not in _ASKED:
        return vm
    with ctx.db.session() as s:
        host_id = find_vm(s, vm.name).host_id
        host = s.get(Host, host_id) if host_id is not None else None
        reachable = host is not None and host.status in ("up", "maintenance")
    if host_id is None or not reachable:
        return vm
    try:
        answers = ctx.agent(host_id).guest_agent(vm.name).answers
    except CorralError:
        return vm
    return vm.model_copy(update={"guest_agent": answers})


def _running(ctx: EngineContext, name: str, what: str) -> str:
    """The host id of running VM ``name``; 409 otherwise."""
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        state, host_id = VmState(vm.state), vm.host_id
    if state != VmState.RUNNING or host_id is None:
        raise WrongState(f"VM {name} is {state.value}: {what} needs it running "
                         f"(`corral vm start {name}`)", state=state.value)
    return host_id


def exec_command(ctx: EngineContext, name: str, req: VmExec) -> VmExecResult:
    """Run ``req.command`` in the guest and wait for it (at most ``req.timeout`` s); 409
    when the VM does not run or no guest agent answers in it."""
    host_id = _running(ctx, name, "running a command in its guest")
    body = GuestExecBody(command=req.command, stdin=req.stdin, timeout=req.timeout)
    done = ctx.agent(host_id).guest_exec(name, body)
    return VmExecResult(exit_code=done.exit_code, signal=done.signal, stdout=done.stdout,
                        stderr=done.stderr, truncated=done.truncated, timed_out=done.timed_out)


def vnc(ctx: EngineContext, name: str) -> VmVnc:
    """Where the running VM's VNC display listens: its host and the port libvirt gave it."""
    host_id = _running(ctx, name, "a VNC display")
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        host_name = host.name if host is not None else "?"
        address = (urlsplit(host.url).hostname or "") if host is not None else ""
    shown = [g for g in ctx.agent(host_id).graphics(name) if g.type == "vnc"]
    if not shown or not shown[0].port or shown[0].port < 0:
        raise WrongState(f"VM {name} has no VNC display (graphics none?): `corral vm set "
                         f"{name} --graphics vnc` gives it one at its next start")
    return VmVnc(vm=name, host=host_name, host_address=address,
                 listen=shown[0].listen or "127.0.0.1", port=shown[0].port)
