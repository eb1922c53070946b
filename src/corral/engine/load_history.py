"""A short history of each host's load, from its agent's reports, for the balancer.

Kept in memory (a few thousand samples a host): an engine that restarts watches for one
window before it balances again, which is the cautious thing to do anyway. Times are wall
clock seconds, as the operations' rows the balancer also reads.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.agent_api.reports import HostReport

MAX_SAMPLES = 4096  # per host: over an hour of 1 s heartbeats, more than any window
RECENT = 0.25  # the part of the window a host must still be above at its end


@dataclass(frozen=True)
class Sample:
    at: float
    cpu_percent: float | None
    memory_percent: float | None
    vm_cpus: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Window:
    """A host's load over a window: means over the whole of it and over its last quarter,
    and whether its samples reach back to the window's start."""

    cpu_percent: float | None
    memory_percent: float | None
    recent_cpu_percent: float | None
    recent_memory_percent: float | None
    vm_cpus: dict[str, float]  # mean of each VM over the samples it appears in
    samples: int
    covered: bool


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


class LoadHistory:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._hosts: dict[str, deque[Sample]] = {}

    def record(self, host_id: str, report: HostReport, at: float | None = None) -> None:
        """Keep the load a report carries (nothing from an agent that measures none)."""
        if report.cpu_percent is None and report.memory_used_percent is None:
            return
        sample = Sample(self.clock() if at is None else at, report.cpu_percent,
                        report.memory_used_percent,
                        {k: max(0.0, v) for k, v in report.vm_cpus.items()})
        with self._lock:
            self._hosts.setdefault(host_id, deque(maxlen=MAX_SAMPLES)).append(sample)

    def forget(self, host_id: str) -> None:
        with self._lock:
            self._hosts.pop(host_id, None)

    def samples(self, host_id: str, since: float) -> list[Sample]:
        with self._lock:
            return [x for x in self._hosts.get(host_id, ()) if x.at >= since]

    def latest(self, host_id: str) -> Sample | None:
        with self._lock:
            kept = self._hosts.get(host_id)
            return kept[-1] if kept else None

    def window(self, host_id: str, window_s: float, now: float,
               settled_since: float | None = None) -> Window:
        """The load over the last ``window_s`` seconds, counting only what came after
        ``settled_since`` (the end of the last move to or from the host: before it, its
        load was another one). ``covered``: the samples reach back to the window's start
        (give or take a tenth of it, or two seconds: heartbeats come every second or so)."""
        start = now - window_s
        since = start if settled_since is None else max(start, settled_since)
        taken = self.samples(host_id, since)
        recent = [x for x in taken if x.at >= now - window_s * RECENT]
        slack = max(2.0, window_s / 10)
        covered = (bool(taken) and since == start and taken[0].at <= start + slack
                   and bool(recent))
        per_vm: dict[str, list[float]] = {}
        for x in taken:
            for vm_id, used in x.vm_cpus.items():
                per_vm.setdefault(vm_id, []).append(used)
        return Window(
            cpu_percent=_mean([x.cpu_percent for x in taken]),
            memory_percent=_mean([x.memory_percent for x in taken]),
            recent_cpu_percent=_mean([x.cpu_percent for x in recent]),
            recent_memory_percent=_mean([x.memory_percent for x in recent]),
            vm_cpus={k: sum(v) / len(v) for k, v in per_vm.items()},
            samples=len(taken), covered=covered)
