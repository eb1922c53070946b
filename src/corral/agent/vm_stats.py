"""The recent CPU, memory, disk and network use of each running VM and of the host, kept in
memory for the web UI's graphs and ``corral vm stats`` (``GET /v1/stats/...``).

Every ``interval_s`` one bulk read of libvirt's domain stats (``Hypervisor.domain_stats``:
cumulative counters) becomes rates against the previous reading; CPU goes through the same
``CpuSampler`` as the load the agent reports. The last ``keep_s`` (10 minutes) of each VM stay
in a fixed ring of doubles: 120 samples x 7 values x 8 bytes = 6.6 KiB per VM (plus one for the
host), whatever the uptime; a VM that stopped keeps its ring until its newest sample is older
than ``keep_s``. The host's series are its VMs' sums (lab hosts share one machine, so the
machine's own counters could not tell them apart; CPU % is of the host's CPUs, as the
balancer's). Long-term history is another backend's job (Prometheus, a later issue).
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.agent.cpu_load import CpuSampler
from corral.agent_api.stats import METRICS, StatsAnswer

log = logging.getLogger(__name__)

_NAMES = tuple(METRICS)
_WIDTH = 1 + len(_NAMES)  # the sample's unix time, then one value per metric


class Ring:
    """The last ``size`` samples, in one preallocated array of doubles."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data = array("d", bytes(8 * size * _WIDTH))
        self._count = 0  # samples ever added; the next goes to _count % size

    def add(self, t: float, values: tuple[float, ...]) -> None:
        at = (self._count % self.size) * _WIDTH
        self._data[at:at + _WIDTH] = array("d", (t, *values))
        self._count += 1

    def newest(self) -> float | None:
        if not self._count:
            return None
        return self._data[((self._count - 1) % self.size) * _WIDTH]

    def since(self, t0: float) -> list[tuple[float, ...]]:
        """The samples taken after ``t0``, oldest first, each (t, *values)."""
        held = min(self._count, self.size)
        first = self._count - held
        rows = []
        for n in range(first, self._count):
            at = (n % self.size) * _WIDTH
            row = tuple(self._data[at:at + _WIDTH])
            if row[0] > t0:
                rows.append(row)
        return rows


@dataclass(frozen=True)
class Counters:
    """One domain's cumulative counters (bytes, ns) and its memory in use now."""

    cpu_ns: int
    memory_bytes: int
    disk_read: int
    disk_write: int
    net_rx: int
    net_tx: int


def _summed(record: Mapping[str, Any], kind: str, field: str) -> int:
    return sum(int(record.get(f"{kind}.{i}.{field}", 0))
               for i in range(int(record.get(f"{kind}.count", 0))))


def counters(record: Mapping[str, Any]) -> Counters:
    """libvirt's flat record -> Counters. Memory in use: what the guest's balloon driver says
    it uses (available - unused) when it reports; else QEMU's resident memory; else its size."""
    kib = record.get("balloon.rss", record.get("balloon.current", 0))
    if "balloon.available" in record and "balloon.unused" in record:
        kib = int(record["balloon.available"]) - int(record["balloon.unused"])
    return Counters(cpu_ns=int(record.get("cpu.time", 0)), memory_bytes=max(0, int(kib)) * 1024,
                    disk_read=_summed(record, "block", "rd.bytes"),
                    disk_write=_summed(record, "block", "wr.bytes"),
                    net_rx=_summed(record, "net", "rx.bytes"),
                    net_tx=_summed(record, "net", "tx.bytes"))


def _rate(now: int, before: int, seconds: float) -> float | None:
    return None if now < before else round((now - before) / seconds, 1)


class StatsSampler:
    """``read``: libvirt's records by domain name (``Hypervisor.domain_stats``); ``clock``:
    unix seconds stamped on samples; ``mono``: monotonic seconds the rates divide by (tests
    pass their own for both)."""

    def __init__(self, read: Callable[[], dict[str, dict[str, Any]]], interval_s: float = 5.0,
                 keep_s: float = 600.0, cpus: int | None = None,
                 clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.keep_s = interval_s, keep_s
        self._read, self._clock, self._mono = read, clock, mono
        self._size = max(2, round(keep_s / interval_s))
        self._cpu = CpuSampler(cpus, clock=mono)
        self._last: tuple[float, dict[str, Counters]] | None = None
        self._rings: dict[str, Ring] = {}
        self._host = Ring(self._size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Read the counters once and add a sample to each VM seen twice in a row (and to
        the host's ring)."""
        now, mono = self._clock(), self._mono()
        read = {name: counters(r) for name, r in self._read().items()}
        host_cpu, vm_cpus = self._cpu.sample({name: c.cpu_ns for name, c in read.items()})
        last, self._last = self._last, (mono, read)
        if last is None or mono <= last[0]:
            return
        seconds = mono - last[0]
        sums = [0.0] * 5
        with self._lock:
            for name, c in read.items():
                before = last[1].get(name)
                if before is None or name not in vm_cpus:
                    continue  # just started, migrated in or restarted: from its next reading
                rates = (_rate(c.disk_read, before.disk_read, seconds),
                         _rate(c.disk_write, before.disk_write, seconds),
                         _rate(c.net_rx, before.net_rx, seconds),
                         _rate(c.net_tx, before.net_tx, seconds))
                if None in rates:  # a counter went back (a disk or NIC unplugged)
                    continue
                values = (round(100.0 * vm_cpus[name], 2), float(c.memory_bytes),
                          *(float(r or 0.0) for r in rates))
                self._ring(name).add(now, values)
                sums = [a + b for a, b in zip(sums, values[1:], strict=True)]
            if host_cpu is not None:
                self._host.add(now, (host_cpu, *sums))
            self._forget(now)

    def _ring(self, name: str) -> Ring:
        ring = self._rings.get(name)
        if ring is None:
            ring = self._rings[name] = Ring(self._size)
        return ring

    def _forget(self, now: float) -> None:
        """Drop the rings of VMs not seen for ``keep_s`` (stopped, deleted, moved away)."""
        for name in [n for n, r in self._rings.items()
                     if (r.newest() or 0.0) < now - self.keep_s]:
            del self._rings[name]

    def series(self, name: str | None, since: float | None = None) -> StatsAnswer:
        """VM ``name``'s samples (the host's: None) after ``since`` (unix s; default: all
        kept); a VM this host has no samples of answers empty series."""
        t0 = since or 0.0  # the ring holds keep_s at most; _forget drops stale rings
        with self._lock:
            ring = self._host if name is None else self._rings.get(name)
            rows = ring.since(t0) if ring is not None else []
        return StatsAnswer(interval_s=self.interval_s, keep_s=self.keep_s, series={
            metric: [(row[0], row[1 + i]) for row in rows] for i, metric in enumerate(_NAMES)})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="vm-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # libvirtd away: try at the next tick
                log.warning("sampling domain stats failed: %s", exc)
            self._stop.wait(self.interval_s)
