"""Small helpers of the benchmark: percentiles, a log line, bounded polling of libvirt state."""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import libvirt

POLL_S = 0.005  # how often a domain's state is asked while waiting for "running"


class BenchError(Exception):
    """Something the benchmark could not do (a setup step, a bounded wait that ran out)."""


def _silence(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; the polls below expect some."""


libvirt.registerErrorHandler(_silence, None)

_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, with seconds since the benchmark started."""
    print(f"[{time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default method)."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * pct / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ratio_interval(a: Sequence[float], b: Sequence[float], pct: float = 90.0,
                   rounds: int = 2000, seed: int = 41) -> tuple[float, float]:
    """A bootstrap interval of median(a) / median(b): how far the ratio moves by chance."""
    if not a or not b:
        return math.nan, math.nan
    rng = random.Random(seed)
    ratios = [median(rng.choices(a, k=len(a))) / median(rng.choices(b, k=len(b)))
              for _ in range(rounds)]
    tail = (100.0 - pct) / 2
    return percentile(ratios, tail), percentile(ratios, 100.0 - tail)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def wait_running(
    conn: Any,
    name: str,
    t0: float,
    timeout: float = 60.0,
    abort: Callable[[], str | None] | None = None,
) -> float:
    """Seconds from ``t0`` (a ``perf_counter`` value) until libvirt says ``name`` runs.

    Asks ``virDomain.state()`` every :data:`POLL_S` seconds (looking the domain up until it
    exists); ``abort`` is called on each round and a non-empty answer ends the wait with
    BenchError, as does ``timeout``.
    """
    deadline = t0 + timeout
    dom: Any = None
    while True:
        if dom is None:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        if dom is not None:
            try:
                state = dom.state()[0]
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                dom, state = None, None
            if state == libvirt.VIR_DOMAIN_RUNNING:
                return time.perf_counter() - t0
        if abort is not None:
            why = abort()
            if why:
                raise BenchError(f"waiting for {name} to run: {why}")
        if time.perf_counter() > deadline:
            raise BenchError(f"domain {name} was not running {timeout:g} s after the request")
        time.sleep(POLL_S)


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.5) -> float:
    """Poll ``check`` until it is true; seconds it took, or BenchError after ``timeout``."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
