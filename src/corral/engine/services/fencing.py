"""Fencing and power management of hosts through their fence methods (fence_config).

``fence_off`` is what HA runs before it starts a lost host's VMs elsewhere: each method in
order sends ``off`` and then asks ``status``; the host counts as fenced only when a device
answered ``off`` to ``status`` (exit 2) — an ``off`` that said "done" is not taken on its
word. A method that fails hands over to the next; none confirming is an outcome with every
method's reason, never an exception. Blocking, bounded (each agent call has a timeout).

``corral host power HOST on|off|cycle`` runs the same as an operation (``host.power``, under
``host-power:NAME``), refused for off and cycle while VMs run on the host unless forced;
`corral host fence test` / `host power status` ask ``status`` of every method.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from corral.api import Operation, VmState
from corral.api.fencing import FenceCheck, FenceTest
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Vm
from corral.engine.fencing import AgentRun, find_agent, run_agent
from corral.engine.operations import OpContext
from corral.engine.services import fence_config
from corral.engine.services.fence_config import Method
from corral.errors import Conflict, CorralError, HostError, NotFound

log = logging.getLogger(__name__)
AGENT_TIMEOUT_S = 20.0  # one agent call; a BMC that takes longer counts as failed
# VMs in these states are running on the host: powering it off takes them down
RUNNING = {VmState.RUNNING, VmState.PAUSED, VmState.SHUTTING_DOWN, VmState.CREATING}


@dataclass(frozen=True)
class FenceOutcome:
    """``confirmed``: a device said the host is off; ``method``: which one (``#2
    fence_ipmilan``), empty when none; ``detail``: what happened, every method's reason."""

    confirmed: bool
    method: str
    detail: str


def configured(ctx: EngineContext, host_id: str) -> bool:
    return fence_config.configured(ctx, host_id)


def _label(m: Method) -> str:
    return f"#{m.position} {m.agent}"


def _run(m: Method, action: str) -> AgentRun:
    """One action of one method; a missing agent or a bad option is a failed run."""
    try:
        return run_agent(find_agent(m.agent), action, m.options, timeout_s=AGENT_TIMEOUT_S)
    except (CorralError, OSError) as e:
        return AgentRun(action, 1, "", str(e))


def _host_name(ctx: EngineContext, host_id: str) -> str:
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            raise NotFound(f"host {host_id} not found")
        return host.name


def _power(ctx: EngineContext, host_id: str, want: str) -> FenceOutcome:
    """``want`` "off" or "on" through each method in order, confirmed by ``status``."""
    name = _host_name(ctx, host_id)
    methods = fence_config.methods(ctx, host_id)
    reasons = []
    for m in methods:
        done = _run(m, want)
        if not done.ok:
            reasons.append(f"{_label(m)}: {done.reason()}")
            continue
        status = _run(m, "status")
        if status.power == want:
            return FenceOutcome(True, _label(m), f"{_label(m)}: {want}, confirmed by status")
        said = f"says {status.power}" if status.power else status.reason()
        reasons.append(f"{_label(m)}: {want} answered done but status {said}")
    detail = "; ".join(reasons) if reasons else \
        f"host {name} has no fence method (`corral host fence set {name}`)"
    return FenceOutcome(False, "", detail)


def fence_off(ctx: EngineContext, host_id: str) -> FenceOutcome:
    """Power the host off through its methods; confirmed only by a device's ``status``."""
    outcome = _power(ctx, host_id, "off")
    name = _host_name(ctx, host_id)
    (log.info if outcome.confirmed else log.warning)("fencing %s: %s", name, outcome.detail)
    ctx.bus.publish("host", {"name": name, "fence": "confirmed" if outcome.confirmed
                             else "failed", "method": outcome.method,
                             "detail": outcome.detail})
    return outcome


def power_on(ctx: EngineContext, host_id: str) -> FenceOutcome:
    return _power(ctx, host_id, "on")


def test(ctx: EngineContext, name: str) -> FenceTest:
    """``status`` asked of every method of the host (none changes its power)."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            raise NotFound(f"host {name} not found (`corral host list`)", field="name")
        host_id = host.id
    checks = []
    for m in fence_config.methods(ctx, host_id):
        run = _run(m, "status")
        detail = run.stdout.strip().splitlines()[-1:] if run.power else [run.reason()]
        checks.append(FenceCheck(position=m.position, agent=m.agent, action="status",
                                 ok=run.power is not None, power=run.power,
                                 detail=detail[0] if detail else ""))
    if not checks:
        raise Conflict(f"host {name} has no fence method (`corral host fence set {name}`)",
                       field="name")
    return FenceTest(host=name, checks=checks)


# -- `corral host power`: an operation --------------------------------------------------

def submit_power(ctx: EngineContext, name: str, action: str, force: bool) -> Operation:
    """409 now for a host without a fence method, or (off, cycle) with VMs running on it."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            raise NotFound(f"host {name} not found (`corral host list`)", field="name")
        host_id = host.id
        running = sorted(n for n, st in s.query(Vm.name, Vm.state).filter(Vm.host_id == host_id)
                         if st in RUNNING)
    if not configured(ctx, host_id):
        raise Conflict(f"host {name} has no fence method to power it (`corral host fence set "
                       f"{name}`)", field="name")
    if action in ("off", "cycle") and running and not force:
        raise Conflict(f"VMs run on host {name}: {', '.join(running)} (`corral host "
                       "shutdown` moves them first; --force takes them down)", field="force",
                       vms=running)
    return ctx.ops.submit("host.power", {"hosts": [name]},
                          {"host_id": host_id, "name": name, "action": action},
                          [f"host-power:{name}"], host_id=host_id)


def _execute(ctx: EngineContext, op: OpContext) -> None:
    host_id, name, action = op.params["host_id"], op.params["name"], op.params["action"]
    if action in ("off", "cycle"):
        op.progress(10, f"powering host {name} off")
        off = fence_off(ctx, host_id)
        if not off.confirmed:
            raise HostError(f"host {name} not confirmed off: {off.detail}")
        if action == "off":
            op.progress(100, f"host {name} is off ({off.detail})")
            return
    op.progress(60, f"powering host {name} on")
    on = power_on(ctx, host_id)
    if not on.confirmed:
        raise HostError(f"host {name} not confirmed on: {on.detail}")
    op.progress(100, f"host {name} is on ({on.detail})")


def register(ctx: EngineContext) -> None:
    ctx.ops.register("host.power", lambda op: _execute(ctx, op))
