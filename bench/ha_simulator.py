"""`python bench/ha_simulator.py`: the HA simulator's throughput (corral.ha.simulator):
generated scenarios per second, as `make test` runs them (tests/unit/test_ha_simulator.py).
Writes its own section (``<!-- ha_simulator -->``) of docs/benchmarks.md. No lab, no root:
it is Python only.

Method: seeds 0..N-1 (``--seeds``, default 1,000), each ``simulate(generate(seed))`` with
every invariant checked at every 100 ms step; ``--rounds`` rounds (default 3), median
reported. Also counted: the virtual seconds simulated per wall second, and how long the HA
VMs stopped by the faults stayed down in simulated time (median and max: the failover the
pure decisions give, detection + fencing or lease + start; not a measure of real hosts).
For context, the floor: ``policy.decide`` alone on the views of one scenario, as often as a
run calls it. Target: at least 50 scenarios/s, so that `make test`'s 1,000 take 20 s at most.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import outcome
import sections
from corral.ha.policy import decide
from corral.ha.sim.engine import SimEngine
from corral.ha.simulator import generate, simulate

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
SECTION = "ha_simulator"
TARGET_PER_S = 50.0  # 1,000 scenarios in 20 s: the budget of `make test` for them


@dataclass
class Result:
    seeds: int
    rounds_s: list[float] = field(default_factory=list)
    virtual_s: float = 0.0
    steps: int = 0
    violations: int = 0
    downtimes_s: list[float] = field(default_factory=list)
    decide_calls: int = 0
    decide_s: float = 0.0

    def rate(self) -> float:
        return self.seeds / statistics.median(self.rounds_s) if self.rounds_s else 0.0


def one_round(res: Result, count_calls: bool) -> None:
    t0 = time.perf_counter()
    for seed in range(res.seeds):
        out = simulate(generate(seed))
        if count_calls:
            res.virtual_s += out.scenario.end_ms / 1000
            res.steps += out.steps
            res.violations += not out.ok
            res.downtimes_s += out.downtimes_s
    res.rounds_s.append(time.perf_counter() - t0)


def decide_floor(res: Result) -> None:
    """``decide`` alone, on the views one scenario's engine builds, as often as a round."""
    views = []
    original = SimEngine.round

    def keep(self: SimEngine) -> object:
        views.append(self.view())
        return original(self)

    SimEngine.round = keep  # type: ignore[method-assign]
    try:
        simulate(generate(0))
    finally:
        SimEngine.round = original  # type: ignore[method-assign]
    t0 = time.perf_counter()
    for view in views:
        decide(view)
    res.decide_calls, res.decide_s = len(views), time.perf_counter() - t0


def section(res: Result, rounds: int, errors: list[str], facts: dict[str, str]
            ) -> tuple[str, list[str]]:
    rate = res.rate()
    down = sorted(res.downtimes_s)
    lines = [
        "## HA simulator: generated scenarios per second (`bench/ha_simulator.py`)", "",
        "Method: see the docstring of `bench/ha_simulator.py`: seeds 0.."
        f"{res.seeds - 1}, each a generated fault scenario (2-5 hosts, 1-4 faults, then a "
        f"calm of 40 s), every invariant checked at every 100 ms step; {rounds} rounds, "
        "median.", "",
        "| measure | figure |", "|---|---|",
        f"| scenarios per second | {rate:,.0f} |",
        f"| simulated seconds per wall second | "
        f"{res.virtual_s / statistics.median(res.rounds_s) if res.rounds_s else 0:,.0f} |",
        f"| steps checked per round | {res.steps:,} |",
        f"| invariant violations | {res.violations} |",
        f"| HA VMs stopped by a fault and brought back | {len(down):,} |",
    ]
    if down:
        lines.append(f"| their downtime, simulated (median / max) | "
                     f"{statistics.median(down):.1f} s / {down[-1]:.1f} s |")
    if res.decide_calls:
        lines.append(f"| floor: `policy.decide` alone ({res.decide_calls} views of seed 0) | "
                     f"{res.decide_s / res.decide_calls * 1e6:.0f} µs a call |")
    ok = rate >= TARGET_PER_S
    missed = [] if ok else [f"scenarios/s: {rate:,.0f} (target >= {TARGET_PER_S:,.0f})"]
    lines += ["", "| measure | figure | target | verdict |", "|---|---|---|---|",
              f"| scenarios/s | {rate:,.0f} | >= {TARGET_PER_S:,.0f} | "
              f"**{'PASS' if ok else 'MISS'}** |", "",
              "The downtimes are those of the simulated world (detection 3 s, fence runs "
              "0.5-3 s or 5-9 s when slow, leases of 10 s + 2 s margin, starts 0.3-1.5 s, "
              "faults still under way): the lab's failover benchmark measures real hosts.", ""]
    lines += sections.closing_lines(errors, facts)
    return "\n".join(lines), missed


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    measured = sections.Measured.now()
    facts = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
             "Python": platform.python_version()}
    res = Result(args.seeds)
    errors: list[str] = []
    try:
        for r in range(args.rounds):
            one_round(res, count_calls=r == 0)
            print(f"round {r + 1}: {res.seeds / res.rounds_s[-1]:,.0f} scenarios/s",
                  file=sys.stderr, flush=True)
        decide_floor(res)
        if res.violations:
            errors.append(f"{res.violations} scenarios broke an invariant "
                          "(tests/unit/test_ha_simulator.py names them)")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    facts["load average at the end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    text, missed = section(res, args.rounds, errors, facts)
    sections.write_section(args.report, SECTION, text, measured)
    print(text)
    return outcome.finish("\n".join(errors) or None, missed)


if __name__ == "__main__":
    sys.exit(main())
