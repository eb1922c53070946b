"""`corral host maintenance HOST`: empty the host, then keep new VMs off it (operation
``host.maintenance`` under ``host:NAME``, cancellable).

First the plan (corral.engine.services.evacuation_plan), at the request and again under the
lock: a VM that cannot move refuses the whole maintenance (409 naming each VM and why)
before anything moves, unless ``force`` (then it stays on the host, listed). Then the host
is marked ``maintenance`` BEFORE the moves: the scheduler must place nothing new on a host
that is being emptied, and a create landing there meanwhile would have to be moved too (the
migrations and image copies accept a source in maintenance). Then the moves, each an
operation of its own (so each shows its own progress and can be looked at alone), at most
``migration.parallel`` at a time: live migration (a root disk on the host's own storage is
copied), offline migration of stopped VMs, or for ``auto`` VMs that cannot move live: stop,
move offline, start on the target. ``stop`` VMs are stopped and stay.

Failure is honest: a move that fails (without ``force``) starts no further move, lets those
in flight end, and puts the host back ``up`` (it is not empty: "maintenance" would claim
what is not so); the error names what moved, what failed and what did not start. A cancel
cancels the moves in flight (a live migration aborts: the VM keeps running where it was),
starts again a VM a cold move had stopped, and also puts the host back ``up``, with what
moved already moved. With ``force`` a failed move is listed as left, like a blocked VM,
and the host ends in maintenance.

A child operation occupies a worker of the runner while the evacuation waits in another:
the pool (8 workers) runs a few evacuations at once without starving their moves.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from corral.api import HostState, Operation, PowerAction, VmStatePut
from corral.api.evacuation import EvacuationAction, EvacuationPlan, EvacuationStep
from corral.api.migration import VmMigrate
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.engine.db.models import Operation as OperationRow
from corral.engine.operations import OpContext
from corral.engine.oprows import ACTIVE
from corral.engine.services import (
    cluster_settings,
    evacuation_plan,
    host_states,
    vm_migration,
    vms,
)
from corral.engine.services.host_states import HostAction
from corral.errors import Cancelled, Conflict, CorralError, NotFound

TYPE = "host.maintenance"
Action = EvacuationAction
POLL_S = 0.5  # how often the moves in flight are looked at (a wait wakes on any end)
MOVE_BOUND_S = vm_migration.JOB_TIMEOUT_S + 3600.0  # the longest one VM may take
SETTLE_S = 600.0  # a resumed evacuation waits at most this for migrations left in flight
_SHOWN = 10  # VMs a message names before "..."

_STEPS: dict[Action, list[str]] = {
    Action.LIVE: ["live"], Action.OFFLINE: ["offline"],
    Action.COLD: ["stop", "offline", "start"], Action.STOP: ["stop"]}


def _names(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (" ..." if len(items) > _SHOWN else "")


def refusal(p: EvacuationPlan) -> Conflict:
    """The 409 of a plan with VMs that cannot move: each VM and why."""
    why = {st.vm: st.reason or "cannot move" for st in p.steps if st.action is Action.BLOCKED}
    listed = "; ".join(f"{vm}: {reason}" for vm, reason in list(why.items())[:_SHOWN])
    more = f"; and {len(why) - _SHOWN} more" if len(why) > _SHOWN else ""
    return Conflict(f"host {p.host} stays up: {len(why)} VM(s) cannot move off it ({listed}"
                    f"{more}). Make room or change them (`corral vm set NAME --evacuation "
                    "stop`), or give --force to leave them on it", field="name", vms=why)


# -- the request ---------------------------------------------------------------------------

def maintenance(ctx: EngineContext, name: str, force: bool = False) -> Operation:
    """Checked now (a wrong state, VMs that cannot move without ``force``: 409), and again
    by the operation under the host's lock."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            raise NotFound(f"host {name} not found (`corral host list`)", field="name")
        host_id, state = host.id, HostState(host.status)
    host_states.target(name, state, HostAction.MAINTENANCE)  # a wrong state: 409 now
    p = evacuation_plan.plan(ctx, name)
    if p.blocked and not force:
        raise refusal(p)
    return ctx.ops.submit(TYPE, {"hosts": [name]},
                          {"host_id": host_id, "name": name, "force": force},
                          [f"host:{name}"], host_id=host_id)


# -- the operation -------------------------------------------------------------------------

@dataclass
class _Move:
    """One VM's way off the host: the operations left to submit, the one in flight."""

    step: EvacuationStep
    todo: list[str]
    op_id: str | None = None
    started: float = 0.0
    stopped: bool = False  # a cold move stopped it and nothing started it since
    restoring: bool = False  # its cold move failed: being started again where it is
    error: str | None = None

    @property
    def vm(self) -> str:
        return self.step.vm


@dataclass
class _Run:
    """Where an evacuation stands: what moved, what was stopped, what failed and why."""

    total: int
    moved: list[str] = field(default_factory=list)  # "web → h2"
    stopped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    last: str = ""  # the last arrival, as the progress shows it: "web → h2 (640 ms)"

    @property
    def done(self) -> int:
        return len(self.moved) + len(self.stopped)

    def said(self, then: str = "") -> str:
        """The progress message: how many moved and the last one (which a client printing
        each change catches even once the next move has started), then ``then``."""
        text = f"{self.done}/{self.total} moved" + (f": {self.last}" if self.last else "")
        return f"{text}; {then}" if then else text


def _submit(ctx: EngineContext, m: _Move, host: str) -> Operation:
    kind, target = m.todo[0], m.step.target
    reason = f"evacuation of host {host}"
    if kind == "live":
        return vm_migration.migrate(ctx, m.vm, VmMigrate(
            to=target, copy_storage=m.step.copy_storage), reason=reason)
    if kind == "offline":  # a stopped VM's definition and disk (VmMigrate.offline)
        return vm_migration.migrate(ctx, m.vm, VmMigrate(to=target, offline=True),
                                    reason=reason)
    action = PowerAction.STOP if kind == "stop" else PowerAction.START
    return vms.change_state(ctx, m.vm, VmStatePut(action=action))


def _next(ctx: EngineContext, m: _Move, host: str) -> str | None:
    """Submit ``m``'s next operation; why it was refused, or None."""
    try:
        m.op_id = _submit(ctx, m, host).id
    except CorralError as exc:
        m.op_id = None
        return exc.message
    return None


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _arrived(op: OpContext, run: _Run, m: _Move) -> None:
    if m.step.action is Action.STOP:
        run.stopped.append(m.vm)
        said = f"{m.vm} stopped"
    else:
        run.moved.append(f"{m.vm} → {m.step.target}")
        said = f"{m.vm} → {m.step.target}"
    run.last = f"{said} ({_duration(time.monotonic() - m.started)})"
    op.progress(5 + 90 * run.done // max(run.total, 1), run.said())


def _ended(ctx: EngineContext, op: OpContext, run: _Run, m: _Move, host: str) -> bool:
    """``m``'s operation in flight ended: submit its next one (True: in flight again), or
    record how ``m`` ended."""
    assert m.op_id is not None
    got = ctx.ops.get(m.op_id)
    kind = m.todo.pop(0)
    if got.status.value != "success":
        return _fail(ctx, run, m, kind, got.outcome(), host)
    if kind == "stop" and m.step.action is Action.COLD:
        m.stopped = True
    elif kind == "start":
        m.stopped = False
    if m.restoring:
        run.failed[m.vm] = f"{m.error} (started again on {host})"
        return False
    if m.todo:
        refused = _next(ctx, m, host)
        return refused is None or _fail(ctx, run, m, m.todo.pop(0), refused, host)
    _arrived(op, run, m)
    return False


def _fail(ctx: EngineContext, run: _Run, m: _Move, kind: str, error: str, host: str) -> bool:
    """Step ``kind`` of ``m`` failed: a VM a cold move stopped on this host is started
    again there (True: that start is in flight); else the failure is recorded."""
    if m.restoring:
        run.failed[m.vm] = f"{m.error}; starting it again on {host} failed too: {error}"
        return False
    m.error = error
    if kind == "offline" and m.stopped:
        m.restoring, m.todo = True, ["start"]
        refused = _next(ctx, m, host)
        if refused is None:
            return True
        error += f"; it stays stopped on {host}: {refused}"
    run.failed[m.vm] = error
    return False


def _cancel_moves(ctx: EngineContext, flying: list[_Move], host: str,
                  deadline: float) -> None:
    """Cancel what is in flight and wait for it to end (a stop cannot be cancelled once it
    runs: it ends by itself); a VM a cold move stopped is started again where it is."""
    for m in flying:
        if m.op_id is not None:
            with contextlib.suppress(CorralError):
                ctx.ops.cancel(m.op_id)
    for m in flying:
        if m.op_id is None:
            continue
        got = ctx.ops.wait(m.op_id, max(0.0, deadline - time.monotonic()))
        if m.todo and m.todo[0] == "stop" and got.status.value == "success" \
                and m.step.action is Action.COLD:
            m.stopped = True
        if m.stopped and not m.restoring:
            m.todo = ["start"]
            if _next(ctx, m, host) is None and m.op_id is not None:
                ctx.ops.wait(m.op_id, max(0.0, deadline - time.monotonic()))


def _moves(ctx: EngineContext, op: OpContext, run: _Run, todo: list[_Move], host: str,
           force: bool, parallel: int) -> None:
    """Run ``todo``, ``parallel`` at a time. Without ``force`` the first failure starts no
    other; a cancel cancels those in flight (Cancelled raised once they ended)."""
    queue: deque[_Move] = deque(todo)
    flying: list[_Move] = []
    rounds = max(1, -(-len(todo) // parallel))
    deadline = time.monotonic() + MOVE_BOUND_S * rounds
    while (queue and (force or not run.failed)) or flying:
        if op.cancelled:
            _cancel_moves(ctx, flying, host, deadline)
            raise Cancelled(f"evacuation of host {host} cancelled")
        if time.monotonic() > deadline:
            raise CorralError(f"evacuation of host {host}: its moves took longer than "
                              f"{MOVE_BOUND_S * rounds / 3600:.0f} h")
        while queue and len(flying) < parallel and (force or not run.failed):
            m = queue.popleft()
            m.started = time.monotonic()
            refused = _next(ctx, m, host)
            if refused is not None:
                run.failed[m.vm] = refused
                continue
            flying.append(m)
            where = f"stopping {m.vm}" if m.step.action is Action.STOP \
                else f"moving {m.vm} → {m.step.target}"
            op.progress(5 + 90 * run.done // max(run.total, 1), run.said(where))
        if not flying:
            continue
        ctx.ops.wait(flying[0].op_id or "", POLL_S)  # wakes at the end of any operation
        for m in list(flying):
            if m.op_id is not None and not ctx.ops.get(m.op_id).status.done:
                continue
            if m.op_id is None or not _ended(ctx, op, run, m, host):
                flying.remove(m)


def _settle(ctx: EngineContext, host_id: str) -> None:
    """A resumed evacuation (engine restart) first lets the moves of its VMs that are still
    in flight end: the plan then sees where they are."""
    with ctx.db.session() as s:
        ours = {h.name for h in s.query(Host).filter_by(id=host_id)}
        ids = [o.id for o in s.query(OperationRow).filter(
            OperationRow.type == vm_migration.TYPE, OperationRow.status.in_(ACTIVE))
            if o.location in ours]
    deadline = time.monotonic() + SETTLE_S
    for op_id in ids:
        ctx.ops.wait(op_id, max(0.0, deadline - time.monotonic()))


def _parallel(ctx: EngineContext) -> int:
    value = cluster_settings.get(ctx, "migration.parallel")
    return max(1, int(value)) if isinstance(value, int) else 2


def execute(ctx: EngineContext, op: OpContext) -> None:
    p: dict[str, Any] = op.params
    host_id, name, force = p["host_id"], p["name"], bool(p.get("force"))
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            raise NotFound(f"host {name} no longer exists", field="name")
        state = HostState(host.status)
    resumed = state is HostState.MAINTENANCE  # this operation marked it: an engine restart
    if resumed:
        _settle(ctx, host_id)
    else:
        host_states.target(name, state, HostAction.MAINTENANCE)
    op.progress(2, "planning")
    plan = evacuation_plan.plan(ctx, name)
    if plan.blocked and not force:
        raise refusal(plan)  # nothing moved, the host as it was
    host_states.move(ctx, host_id, HostAction.MAINTENANCE, "host maintenance")
    # Planned again now that nothing new lands on it: a VM created meanwhile moves too.
    plan = evacuation_plan.plan(ctx, name, state.value)
    if plan.blocked and not force:
        if not resumed:
            host_states.move(ctx, host_id, HostAction.ACTIVATE, "evacuation refused")
        raise refusal(plan)
    todo = [_Move(st, list(_STEPS[st.action])) for st in plan.steps if st.action in _STEPS]
    run = _Run(total=len(todo))
    left = {st.vm: st.reason or "cannot move" for st in plan.steps
            if st.action is Action.BLOCKED}
    op.progress(5, f"host {name} takes no new VMs; moving {len(todo)} VM(s)"
                if todo else f"host {name} takes no new VMs")
    try:
        _moves(ctx, op, run, todo, name, force, _parallel(ctx))
    except CorralError as exc:  # cancelled, or out of time: the host is not empty
        host_states.move(ctx, host_id, HostAction.ACTIVATE, "evacuation ended early")
        raise type(exc)(f"{exc.message}; {_summary(run, todo)}; host {name} is up again",
                        field=exc.field) from None
    if run.failed and not force:
        host_states.move(ctx, host_id, HostAction.ACTIVATE, "evacuation failed")
        failed = "; ".join(f"{vm}: {why}" for vm, why in run.failed.items())
        raise CorralError(f"evacuation of host {name} failed: {failed}; "
                          f"{_summary(run, todo)}; host {name} is up again",
                          failed=run.failed, moved=run.moved)
    left.update(run.failed)
    op.progress(100, _done(name, run, left))


def _summary(run: _Run, todo: list[_Move]) -> str:
    done = {m.split(" → ")[0] for m in run.moved} | set(run.stopped) | set(run.failed)
    parts = [f"moved: {_names(run.moved) or 'none'}"]
    if run.stopped:
        parts.append(f"stopped: {_names(run.stopped)}")
    not_started = [m.vm for m in todo if m.vm not in done]
    if not_started:
        parts.append(f"not moved: {_names(not_started)}")
    return "; ".join(parts)


def _done(name: str, run: _Run, left: dict[str, str]) -> str:
    parts = [f"host {name} is in maintenance: it takes no new VMs"]
    if run.moved:
        parts.append(f"{len(run.moved)} moved ({_names(run.moved)})")
    if run.stopped:
        parts.append(f"{len(run.stopped)} stopped there ({_names(run.stopped)})")
    if left:
        listed = "; ".join(f"{vm}: {why}" for vm, why in list(left.items())[:_SHOWN])
        parts.append(f"{len(left)} left on it ({listed})")
    return "; ".join(parts)


def register(ctx: EngineContext) -> None:
    # Cancellable while it runs: the moves in flight are cancelled, the host goes back up.
    ctx.ops.register(TYPE, lambda op: execute(ctx, op), may_cancel=True)
