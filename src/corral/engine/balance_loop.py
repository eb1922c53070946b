"""The balancer's loop: each ``balance.interval_s``, while the policy is ``balance``, one
decision (corral.engine.balancer) and at most one live migration, whose operation carries
the reason. The last decisions are kept in memory for `corral cluster policy show`.

Like the reconciler's threads: started with the engine, stopped at shutdown (it wakes every
second to see whether a round is due or it must stop). Tests call :meth:`run_round` with
their own clock instead of starting it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from corral.api.cluster_policy import BalanceDecision, ClusterPolicy, HostLoad
from corral.engine.balancer import Verdict, decide, excess
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.engine.services import balancing
from corral.engine.ticker import Ticker
from corral.errors import CorralError

log = logging.getLogger(__name__)

KEEP = 20  # decisions kept for `policy show`
TICK_S = 1.0


@dataclass(frozen=True)
class _Decision:
    at: float
    reason: str
    vm: str | None = None
    source: str | None = None
    target: str | None = None
    operation: str | None = None


class Balancer(Ticker):
    def __init__(self, ctx: EngineContext, clock: Callable[[], float] | None = None) -> None:
        super().__init__("balancer", TICK_S)
        self.ctx = ctx
        self._clock = clock or ctx.loads.clock
        self._decisions: deque[_Decision] = deque(maxlen=KEEP)
        self._lock = threading.Lock()
        self._last_round = float("-inf")

    def tick(self) -> None:
        p = balancing.policy(self.ctx)
        if p.mode != "balance" or self._clock() - self._last_round < p.interval_s:
            return
        self._last_round = self._clock()
        self.run_round()

    def run_round(self) -> Verdict | None:
        """One decision now; None when the policy is off or the balancer's own migration
        still runs."""
        p = balancing.policy(self.ctx)
        if p.mode != "balance":
            return None
        now = self._clock()
        data = balancing.inputs(self.ctx, self.ctx.loads, p, now)
        if data.busy is not None:
            return None
        verdict = decide(data.hosts, data.vms, p.thresholds, now,
                         lambda vm, to: balancing.fits(self.ctx, vm, to))
        m = verdict.move
        if m is None:
            if verdict.note:
                self._note(_Decision(now, verdict.note))
            return verdict
        try:
            op = balancing.move(self.ctx, m)
        except CorralError as exc:  # something changed since the check: next round
            self._note(_Decision(now, f"{m.reason}: not started: {exc.message}", m.vm,
                                 m.source, m.target))
            return Verdict(None, exc.message)
        log.info("%s (operation %s)", m.reason, op.id)
        self._note(_Decision(now, m.reason, m.vm, m.source, m.target, op.id))
        return verdict

    def _note(self, d: _Decision) -> None:
        """Keep a decision; one that says again what the last one said only refreshes it."""
        with self._lock:
            last = self._decisions[-1] if self._decisions else None
            if last is not None and d.operation is None and last.operation is None and \
                    _gist(last.reason) == _gist(d.reason):
                self._decisions[-1] = d
                return
            self._decisions.append(d)

    def decisions(self) -> list[BalanceDecision]:
        with self._lock:
            kept = list(reversed(self._decisions))
        status = balancing.operation_status(self.ctx, [d.operation for d in kept
                                                       if d.operation])
        return [BalanceDecision(at=datetime.fromtimestamp(d.at, UTC), vm=d.vm, source=d.source,
                                target=d.target, reason=d.reason, operation=d.operation,
                                status=status.get(d.operation) if d.operation else None)
                for d in kept]

    def show(self) -> ClusterPolicy:
        p = balancing.policy(self.ctx)
        now = self._clock()
        data = balancing.inputs(self.ctx, self.ctx.loads, p, now)
        with self.ctx.db.session() as s:
            rows = {h.name: (h.id, h.status) for h in s.query(Host)}
        hosts = []
        for h in data.hosts:
            host_id, status = rows.get(h.name, ("", "removed"))
            last = self.ctx.loads.latest(host_id)
            hosts.append(HostLoad(
                host=h.name, status=status,
                cpu_percent=last.cpu_percent if last else None,
                memory_percent=last.memory_percent if last else None,
                window_cpu_percent=_round(h.cpu_percent),
                window_memory_percent=_round(h.memory_percent),
                samples=self.ctx.loads.window(host_id, p.window_s, now).samples,
                covered=h.covered, above=sorted(excess(h, p.thresholds))))
        return ClusterPolicy(mode=p.mode, cpu_percent=p.cpu_percent,
                             memory_percent=p.memory_percent, interval_s=p.interval_s,
                             window_s=p.window_s, cooldown_s=p.cooldown_s,
                             margin_percent=p.margin_percent, running=self.running,
                             hosts=hosts, decisions=self.decisions())


def _gist(reason: str) -> str:
    """A reason without its figures: the same situation, however its loads wobble."""
    return re.sub(r"[\d.]+", "#", reason)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
