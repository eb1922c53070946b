"""The reconciler: compares desired state (DB) with what agents report, and closes the gap.

Each pass, for every host that is up:
- records each VM's actual state (and publishes an event when it changes);
- a VM whose domain vanished from its host is defined again (and started if it should run);
- a VM that should run but was powered off from inside the guest is taken as stopped:
  the guest's own shutdown is the user's intent, not a failure to undo;
- a host whose agent has not answered (a transport error: refused, reset, timed out) for
  ``host_grace_s`` and at least two polls becomes ``unresponsive``; HA fences on that, so
  neither an error the agent answered with (a bug's 500) nor one slow answer may cause it.
  An answered error is logged and the host's status left as it is; the next answer makes
  it ``up`` again.
VMs with an operation in progress are left alone: their operation owns them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.agent_api.domains import DomainInfo
from corral.api import VmState
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Vm, utcnow
from corral.engine.services import vm_define, vm_design
from corral.errors import AgentUnreachable, CorralError

log = logging.getLogger(__name__)

# VMs being created or deleted: their operation owns them, the reconciler keeps off.
_IN_FLUX = {VmState.CREATING.value, VmState.DELETING.value}
MIN_MISSES = 2  # a single failed poll never makes a host unresponsive, whatever the grace


@dataclass
class _Misses:
    """Consecutive polls of one host that got no answer, since ``first`` (clock time)."""

    first: float
    count: int = 0


class Reconciler:
    """``clock``: monotonic seconds; tests pass their own to step through the grace."""

    def __init__(self, ctx: EngineContext, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self._clock = clock
        self._misses: dict[str, _Misses] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.ctx.settings.reconcile_interval):
            try:
                self.run_once()
            except Exception:  # keep reconciling whatever one pass hit
                log.exception("reconcile pass failed")

    def run_once(self) -> None:
        with self.ctx.db.session() as s:
            host_ids = [h.id for h in s.query(Host)]
        for gone in self._misses.keys() - set(host_ids):  # hosts removed meanwhile
            del self._misses[gone]
        for host_id in host_ids:
            self._host(host_id)

    def _host(self, host_id: str) -> None:
        ctx = self.ctx
        asked = self._clock()
        try:
            reported = ctx.agent(host_id).domains()
        except AgentUnreachable as exc:
            self._missed(host_id, asked, exc)
            return
        except CorralError as exc:
            # It answered, so it is reachable: not a miss, and no grounds to fence it.
            self._misses.pop(host_id, None)
            log.warning("host %s: poll failed (status left as it is): %s", host_id, exc)
            return
        self._misses.pop(host_id, None)
        self._host_status(host_id, "up", "agent answered")
        by_id = {d.vm_id: d for d in reported if d.vm_id}
        with ctx.db.session() as s:
            rows = [(v.id, v.name, v.state, v.desired_power)
                    for v in s.query(Vm).filter_by(host_id=host_id)]
        for vm_id, name, state, desired in rows:
            if state in _IN_FLUX:
                continue
            with ctx.ops.try_hold([f"vm:{name}"]) as held:  # never waits, never overtakes
                if not held:
                    continue
                try:
                    self._vm(host_id, vm_id, name, state, desired, by_id.get(vm_id))
                except CorralError as exc:
                    log.warning("reconcile VM %s: %s", name, exc)

    def _vm(self, host_id: str, vm_id: str, name: str, state: str, desired: str,
            domain: DomainInfo | None) -> None:
        ctx = self.ctx
        agent = ctx.agent(host_id)
        if domain is None:
            ctx.bus.publish("vm", {"name": name, "state": state,
                                   "message": "domain missing on host: defining it again"})
            agent.define(name, vm_design.domain_xml(ctx, vm_id)[2])
            actual = "stopped"
            if desired == "running":
                actual = agent.act(name, "start").state
        else:
            actual = domain.state
            if actual != state:
                # The listing was taken before we held the lock: an operation may have
                # changed the VM since. Ask again now that nothing else can.
                actual = agent.domain(name).state
        fields: dict[str, str] = {"state": VmState(actual).value}
        if desired == "running" and actual == "stopped" and state == "running":
            fields["desired_power"] = "stopped"  # shut down from inside the guest
        vm_define.set_fields(ctx, vm_id, **fields)

    def _missed(self, host_id: str, asked: float, exc: AgentUnreachable) -> None:
        # Unreachable since the first unanswered poll was sent, not since it gave up.
        now = self._clock()
        misses = self._misses.setdefault(host_id, _Misses(first=asked))
        misses.count += 1
        gone_s = now - misses.first
        log.info("host %s: poll %d without an answer (%.0f s): %s",
                 host_id, misses.count, gone_s, exc)
        if misses.count >= MIN_MISSES and gone_s >= self.ctx.settings.host_grace_s:
            self._host_status(host_id, "unresponsive",
                              f"no answer for {gone_s:.0f} s ({misses.count} polls): {exc}")

    def _host_status(self, host_id: str, status: str, reason: str) -> None:
        with self.ctx.db.session() as s:
            host = s.get(Host, host_id)
            if host is None:
                return
            changed = host.status != status
            host.status = status
            if status == "up":
                host.last_seen = utcnow()
            name = host.name
        if changed:
            self.ctx.bus.publish("host", {"name": name, "status": status, "reason": reason})
