"""The CPU load of a host measured from its own VMs, for the engine's balancer.

The load average is the machine's, and lab hosts share one machine, so it cannot tell their
loads apart; libvirt's CPU time of each domain can. Two readings (``Hypervisor.cpu_times``)
give each VM's rate (CPUs' worth: 1.0 is one CPU busy all the time) and, summed over the
host's CPUs, the host's percentage. A VM seen once (just started, just migrated in) or whose
counter went back (restarted) counts from its next reading.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable


class CpuSampler:
    """``clock``: monotonic seconds (tests pass their own); ``cpus``: the host's CPUs."""

    def __init__(self, cpus: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cpus = max(1, cpus or os.cpu_count() or 1)
        self._clock = clock
        self._last: tuple[float, dict[str, int]] | None = None

    def sample(self, times: dict[str, int]) -> tuple[float | None, dict[str, float]]:
        """(host CPU %, CPUs' worth per VM id) since the last call; (None, {}) the first
        time, or when no time passed."""
        now = self._clock()
        last, self._last = self._last, (now, dict(times))
        if last is None or now <= last[0]:
            return None, {}
        wall_ns = (now - last[0]) * 1e9
        rates = {vm_id: (ns - last[1][vm_id]) / wall_ns for vm_id, ns in times.items()
                 if vm_id in last[1] and ns >= last[1][vm_id]}
        percent = min(100.0, 100.0 * sum(rates.values()) / self.cpus)
        return round(percent, 2), {k: round(v, 4) for k, v in rates.items()}
