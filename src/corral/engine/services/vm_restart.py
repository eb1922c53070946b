"""Restart in place: an HA VM that went down on a healthy host, unasked, is started again
where it is (issue 15, docs/ha.md "HA VMs").

The reconciler calls :func:`after_stop` when a VM's row says it ran, it should run, and its
domain is stopped (or crashed). What happens then:

- not HA: nothing here; the reconciler takes the stop as the user's (desired stopped);
- HA, ``restart_policy`` on-failure, and the guest powered itself off (libvirt's reason
  ``shutdown``): nothing either, the same (any other stop is a failure: QEMU killed or
  crashed, a guest panic, a host that rebooted under it, a destroy behind corral's back);
- otherwise the budget decides (corral.ha.restart_budget: ``ha.restart_max`` restarts in
  ``ha.restart_window_s``, cluster settings): started again, or left down with the reason in
  ``vms.ha_reason`` and a ``vm`` event. Left down means desired ``stopped`` (the reconciler
  sets it): nothing restarts it behind the user's back later, `corral vm start` does, and a
  user's start gives it a fresh budget.

The caller holds the VM's lock (``vm:NAME``); the row is read again under it, so a stop a
user asked meanwhile is never undone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from corral.api import VmState
from corral.api.restart_policy import RestartPolicy
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db.models import Vm
from corral.engine.services import cluster_settings, vm_design
from corral.errors import CorralError
from corral.ha.restart_budget import RestartBudget

log = logging.getLogger(__name__)

DOWN = frozenset({"stopped", "crashed"})
# libvirt's reason (corral.agent_api.domains.DomainInfo.reason) when the guest powered itself
# off: the one stop on-failure takes as its user's intent.
GUEST_POWER_OFF = "shutdown"
_GUEST_UP = frozenset({VmState.RUNNING.value, VmState.SHUTTING_DOWN.value})


def budget(ctx: EngineContext) -> RestartBudget:
    return RestartBudget(max_restarts=int(cluster_settings.get(ctx, "ha.restart_max") or 0),
                         window_s=float(cluster_settings.get(ctx, "ha.restart_window_s") or 0))


def wanted(policy: str, actual: str, reason: str) -> bool:
    """Whether an HA VM of ``policy`` that went down (domain ``actual``, libvirt's
    ``reason``) is to run again: on-failure not after the guest's own power-off."""
    if policy == RestartPolicy.ALWAYS.value:
        return True
    return actual == "crashed" or reason != GUEST_POWER_OFF


def after_stop(ctx: EngineContext, agent: AgentClient, vm_id: str, name: str, actual: str,
               reason: str, clock: Callable[[], float] = time.time) -> str:
    """The domain's state once HA had its say: ``running`` when restarted in place, else
    ``actual`` (the reconciler then takes the stop as the user's)."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None or not vm.ha or vm.desired_power != "running" \
                or vm.state not in _GUEST_UP:
            return actual
        policy, history = vm.restart_policy, list(vm.ha_restarts or [])
    why = f"({reason})" if reason else "(no reason given)"
    if not wanted(policy, actual, reason):
        ctx.bus.publish("vm", {"name": name, "state": actual, "ha": "not restarted",
                               "message": f"stopped {why}: the guest powered itself off, "
                                          f"which restart policy {policy} leaves off"})
        return actual
    limits = budget(ctx)
    verdict = limits.check(history, clock())
    if not verdict.allowed:
        _record(ctx, vm_id, list(verdict.history), verdict.reason, booted=False)
        log.warning("HA VM %s: %s", name, verdict.reason)
        ctx.bus.publish("vm", {"name": name, "state": actual, "ha": "left down",
                               "message": f"went down {why}: {verdict.reason}"})
        return actual
    try:
        if actual == "crashed":  # a domain kept after a guest panic: off first
            agent.act(name, "destroy")
        state = str(agent.act(name, "start").state)
    except CorralError as exc:
        message = f"restart in place failed: {exc.message}"
        _record(ctx, vm_id, list(verdict.history), message, booted=False)
        ctx.bus.publish("vm", {"name": name, "state": actual, "ha": "left down",
                               "message": f"went down {why}; {message}"})
        return "stopped" if actual == "crashed" else actual
    _record(ctx, vm_id, list(verdict.history), None, booted=state == VmState.RUNNING.value)
    count = len(verdict.history)
    ctx.bus.publish("vm", {"name": name, "state": state, "ha": "restarted",
                           "message": f"went down {why}: restarted in place ({count} of "
                                      f"{limits.max_restarts} in {limits.window_s:g} s)"})
    return state


def _record(ctx: EngineContext, vm_id: str, history: list[float], reason: str | None,
            booted: bool) -> None:
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None:
            return
        vm.ha_restarts, vm.ha_reason = history, reason
        if booted:  # it booted from its definition: pending settings apply now
            vm.booted = vm_design.boot_settings(vm)


def forget(vm: Vm) -> None:
    """A user's start: a fresh budget, and nothing HA did stands any more."""
    vm.ha_restarts, vm.ha_reason = [], None
