"""The main() of the benchmarks that measure once and write one section of docs/benchmarks.md
(detection, cluster_api, cluster_rss, migration, ha_failover, ha_lease_failover on a lab;
api_projects, web_ui on an engine of their own): one runner, so that every one of them parses,
refuses, records and ends the same way.

:func:`run_bench` parses the command line (the bench's own options, then ``--root`` for a lab
bench, then ``--report``), starts the Result with the machine's facts, runs the body, and
whatever the body raised becomes an error of the report rather than a traceback: the section
is written and printed either way, and the exit code is :func:`outcome.finish`'s.
:func:`in_lab` is the body of a lab bench: `lab up`, its set-up time, then the measuring.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import outcome
import sections
from benchlab import HOSTS, lab_up, load_average, machine_facts, sigterm_exits
from corral.client import Client
from corral.lab.cluster import Lab
from timing import say


class Report(Protocol):
    """What the runner needs of a bench's Result: the rest is the bench's own."""

    errors: list[str]
    facts: dict[str, str]


R = TypeVar("R", bound=Report)


@dataclass(frozen=True)
class Ran:
    """What a bench's section is written from, besides its Result."""

    args: argparse.Namespace
    measured: sections.Measured
    duration_s: float

    @property
    def started(self) -> str:
        return f"{self.measured.started:%Y-%m-%d %H:%M} UTC"


def _at_least_one(names: Sequence[str]) -> str:
    """"--a, --b and --c must be >= 1", as the benches have always said it."""
    flags = [f"--{n.replace('_', '-')}" for n in names]
    listed = flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"
    return f"{listed} must be >= 1"


def run_bench(name: str, doc: str | None, report: Path, *,
              options: Callable[[argparse.ArgumentParser], object],
              result: Callable[[argparse.Namespace, dict[str, str]], R],
              body: Callable[[R, argparse.Namespace], None],
              section: Callable[[R, Ran], tuple[str, Sequence[str]]],
              positive: Sequence[str] = (), lab_root: Path | None = None) -> int:
    """The exit code of bench/NAME.py (section NAME of ``report`` by default).

    ``options`` adds the bench's own options, ``positive`` names those that must be >= 1
    (argparse dests). ``lab_root`` (a lab bench's default ``--root``) also means the bench
    needs root: without it, exit 2 before anything starts. ``result`` makes the Result from
    the options and the machine's facts; ``body`` measures into it; ``section`` gives the
    section's text and the targets missed.
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    options(parser)
    if lab_root is not None:
        parser.add_argument("--root", type=Path, default=lab_root)
    parser.add_argument("--report", type=Path, default=report)
    args = parser.parse_args()
    if any(getattr(args, n) < 1 for n in positive):
        parser.error(_at_least_one(positive))
    if lab_root is not None and os.geteuid() != 0:
        print(f"bench/{name}.py needs root (the lab: namespaces, libvirtd)", file=sys.stderr)
        return 2
    sigterm_exits()
    measured = sections.Measured.now()
    res = result(args, machine_facts())
    t0 = time.monotonic()
    try:
        body(res, args)
    # SystemExit: SIGTERM (sigterm_exits) still gets its report written.
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
        say(f"benchmark failed: {res.errors[-1].splitlines()[0]}")
    res.facts["load average at the end"] = load_average()
    text, missed = section(res, Ran(args, measured, time.monotonic() - t0))
    sections.write_section(args.report, name, text, measured)
    print(text)
    return outcome.finish("\n".join(res.errors) or None, missed)


@dataclass(frozen=True)
class LabSpec:
    """`lab up`'s options for a bench (see benchlab.lab_up)."""

    prefix: str
    hosts: int = HOSTS
    storage: str = "none"
    fence: bool = True
    quorum: bool | None = None
    heartbeat_timeout: float | None = None
    cpu_overcommit: float | None = None


@dataclass(frozen=True)
class InLab:
    """A lab that is up, for a bench's measuring."""

    lab: Lab
    client: Client
    args: argparse.Namespace
    setup_s: float  # how long `lab up` took


def in_lab(spec: LabSpec | Callable[[argparse.Namespace], LabSpec],
           measure: Callable[[R, InLab], None],
           setup_fact: str | None = None) -> Callable[[R, argparse.Namespace], None]:
    """The body of a lab bench: `lab up` under ``--root`` (``spec``, or made from the options),
    its set-up time as fact ``setup_fact`` (None: the bench records it itself), ``measure``,
    and the lab down again whatever happened."""
    def body(res: R, args: argparse.Namespace) -> None:
        s = spec(args) if callable(spec) else spec
        t0 = time.monotonic()
        with lab_up(args.root, s.prefix, hosts=s.hosts, storage=s.storage, fence=s.fence,
                    quorum=s.quorum, heartbeat_timeout=s.heartbeat_timeout,
                    cpu_overcommit=s.cpu_overcommit) as lab, lab.client() as client:
            setup_s = time.monotonic() - t0
            if setup_fact is not None:
                res.facts[setup_fact] = f"{setup_s:.0f} s"
            measure(res, InLab(lab, client, args, setup_s))

    return body
