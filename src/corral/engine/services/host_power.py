"""`corral host reboot|shutdown HOST`: empty the host, then reboot or power off its machine
(operations ``host.reboot`` and ``host.shutdown``, under ``host-power:NAME``).

First the evacuation (`host maintenance`, its own operation: every rule and refusal of it
applies, ``force`` included) unless the host is already in maintenance; then the host's agent
runs the machine's reboot or power-off command (``systemctl reboot`` by default; the lab
power-cycles or powers off the lab host). A shutdown ends when the agent stops answering; a
reboot when the agent answers again with another start id (it started anew). The host stays
in maintenance meanwhile, whatever its heartbeats do. With ``return_vms`` a rebooted host is
activated and the VMs that moved off come back (live, or offline if stopped) where the
rules allow; one that cannot come back is named, the others still come.
"""

from __future__ import annotations

import time

from corral.api import HostState, Operation, OperationStatus
from corral.api.migration import VmMigrate
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Vm
from corral.engine.operations import OpContext
from corral.engine.services import host_lifecycle, vm_migration
from corral.errors import Conflict, CorralError, NotFound

ACTIONS = {"reboot": "reboot", "shutdown": "poweroff"}  # corral's word: the agent's
BACK_TIMEOUT_S = 900.0  # a server's firmware and boot take minutes
OFF_TIMEOUT_S = 300.0
POLL_S = 1.0
CHILD_TIMEOUT_S = 24 * 3600.0


def submit(ctx: EngineContext, name: str, action: str, return_vms: bool = False,
           force: bool = False) -> Operation:
    """409 now for a host whose agent cannot be asked (not up nor in maintenance)."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            raise NotFound(f"host {name} not found (`corral host list`)", field="name")
        host_id, state = host.id, HostState(host.status)
    if state not in (HostState.UP, HostState.MAINTENANCE):
        raise Conflict(f"host {name} is {state}: its agent runs the {action}, it must answer "
                       "(up or in maintenance)", field="name", state=state.value)
    if return_vms and action != "reboot":
        raise Conflict("return_vms: only a reboot brings the host back", field="return_vms")
    return ctx.ops.submit(f"host.{action}", {"hosts": [name]},
                          {"host_id": host_id, "name": name, "return_vms": return_vms,
                           "force": force},
                          [f"host-power:{name}"], host_id=host_id)


def _vms_on(ctx: EngineContext, host_id: str) -> dict[str, str]:
    """Name → state of the VMs defined on the host."""
    with ctx.db.session() as s:
        return {n: st for n, st in s.query(Vm.name, Vm.state).filter(Vm.host_id == host_id)}


def _wait_child(ctx: EngineContext, op: OpContext, child: Operation) -> Operation:
    """Wait for an operation this one started; a cancel of this one cancels it."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        done = ctx.ops.wait(child.id, timeout=POLL_S)
        if done.status.done:
            return done
        if op.cancelled:
            ctx.ops.cancel(child.id)
            op.check_cancelled()
    raise CorralError(f"operation {child.id} did not end in {CHILD_TIMEOUT_S:.0f} s")


def _empty(ctx: EngineContext, op: OpContext, name: str, host_id: str, force: bool) -> None:
    """The evacuation, unless the host is in maintenance already (then nothing may still
    run on it, but with ``force``)."""
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        state = HostState(host.status) if host is not None else None
    if state is not HostState.MAINTENANCE:
        op.progress(5, f"emptying host {name} (`corral host maintenance`)")
        child = host_lifecycle.maintenance(ctx, name, force)
        done = _wait_child(ctx, op, child)
        if done.status is not OperationStatus.SUCCESS:
            why = done.outcome()
            raise Conflict(f"host {name} was not emptied, it keeps running: {why}")
    running = sorted(n for n, st in _vms_on(ctx, host_id).items() if st != "stopped")
    if running and not force:
        raise Conflict(f"VMs still run on host {name}: {', '.join(running)} (move or stop "
                       "them, or --force: they go down with it)", field="force",
                       vms=running)


def _wait_off(op: OpContext, ctx: EngineContext, host_id: str, name: str) -> None:
    deadline = time.monotonic() + OFF_TIMEOUT_S
    while time.monotonic() < deadline:
        op.check_cancelled()
        try:
            ctx.agent(host_id).power_state()
        except CorralError:
            return
        time.sleep(POLL_S)
    raise CorralError(f"host {name}'s agent still answers {OFF_TIMEOUT_S:.0f} s after the "
                      "power-off was sent: is the command right (--poweroff-command)?")


def _wait_back(op: OpContext, ctx: EngineContext, host_id: str, name: str, was: str) -> None:
    deadline = time.monotonic() + BACK_TIMEOUT_S
    gone = False
    while time.monotonic() < deadline:
        op.check_cancelled()
        try:
            now = ctx.agent(host_id).power_state().start_id
        except CorralError:
            if not gone:
                op.progress(50, f"host {name} is down; waiting for it to come back")
            gone = True
        else:
            if now != was:
                return
        time.sleep(POLL_S)
    raise CorralError(f"host {name} did not come back within {BACK_TIMEOUT_S:.0f} s of its "
                      "reboot; it stays in maintenance (`corral host activate` once it is up)")


def _bring_back(ctx: EngineContext, op: OpContext, name: str, host_id: str,
                moved: dict[str, str]) -> list[str]:
    """The VMs that moved off, back where the rules allow; what could not come back."""
    done = _wait_child(ctx, op, host_lifecycle.activate(ctx, name))
    if done.status is not OperationStatus.SUCCESS:
        raise Conflict(f"host {name} is back but could not be activated: {done.outcome()}")
    refused: list[str] = []
    for i, (vm, state) in enumerate(sorted(moved.items()), 1):
        op.progress(80 + 18 * i // max(len(moved), 1), f"bringing {vm} back to {name}")
        req = VmMigrate(to=name, offline=state == "stopped",
                        copy_storage=state != "stopped" and _root_is_local(ctx, vm))
        try:
            child = vm_migration.migrate(ctx, vm, req, reason=f"return to host {name}")
            result = _wait_child(ctx, op, child)
        except CorralError as exc:
            refused.append(f"{vm} ({exc.message})")
            continue
        if result.status is not OperationStatus.SUCCESS:
            refused.append(f"{vm} ({result.outcome()})")
    return refused


def _root_is_local(ctx: EngineContext, vm: str) -> bool:
    with ctx.db.session() as s:
        row = s.query(Vm).filter_by(name=vm).one_or_none()
        return row is not None and row.root_pool_id is None


def execute(ctx: EngineContext, op: OpContext, action: str) -> None:
    p = op.params
    name, host_id = p["name"], p["host_id"]
    before = _vms_on(ctx, host_id)
    _empty(ctx, op, name, host_id, bool(p.get("force")))
    moved = {vm: st for vm, st in before.items() if vm not in _vms_on(ctx, host_id)}
    agent = ctx.agent(host_id)
    sent = agent.power(ACTIONS[action])
    op.progress(40, f"host {name}: {' '.join(sent.command)}")
    if action == "shutdown":
        _wait_off(op, ctx, host_id, name)
        op.progress(100, f"host {name} is off; it stays in maintenance (power it on, then "
                    "`corral host activate`)")
        return
    _wait_back(op, ctx, host_id, name, sent.start_id)
    if not p.get("return_vms"):
        op.progress(100, f"host {name} rebooted; it stays in maintenance until `corral host "
                    "activate`")
        return
    op.progress(80, f"host {name} is back: activating it")
    refused = _bring_back(ctx, op, name, host_id, moved)
    said = f"host {name} rebooted and active; {len(moved) - len(refused)} of {len(moved)} " \
           "VMs back"
    if refused:
        said += f"; not back: {'; '.join(refused)}"
    op.progress(100, said)


def register(ctx: EngineContext) -> None:
    for action in ACTIONS:
        ctx.ops.register(f"host.{action}",
                         lambda op, a=action: execute(ctx, op, a),  # type: ignore[misc]
                         may_cancel=True)
