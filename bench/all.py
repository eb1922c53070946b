"""`make bench`: every benchmark, one after another whatever the earlier ones did, then a summary.

    .venv/bin/python bench/all.py run provision image_import ...   (the Makefile's BENCHES)

Each ``bench/NAME.py`` runs as a process of its own, its output shown as it comes, and ends
with the exit code of bench/outcome.py: 0 passed, 3 ran but missed a target, anything else
failed (it did not finish, or could not run). Through the status file it is given
(``CORRAL_BENCH_STATUS``) it says which targets it missed or why it failed; the summary
lists every benchmark as passed / missed target / FAILED with that, and the exit status is
1 when any failed (a missed target is a result, reported, not a failure). Ctrl-C (or
SIGTERM) stops the running benchmark, which cleans up as usual, and skips the others.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from outcome import MISSED, PASSED, STATUS_ENV

BENCH_DIR = Path(__file__).resolve().parent
WORDS = {"passed": "passed", "missed": "missed target", "failed": "FAILED", "skipped": "not run"}


@dataclass
class Outcome:
    name: str
    state: str  # a key of WORDS
    seconds: float = 0.0
    detail: str = ""


class _Stop:
    """The running benchmark's process, and whether the run was asked to stop."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.asked = False

    def sigterm(self, _signum: int, _frame: FrameType | None) -> None:
        self.asked = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it cleans up (its own SIGTERM handler)


def _read_status(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def judge(name: str, code: int, status: dict[str, object], last_lines: Sequence[str],
          seconds: float) -> Outcome:
    """The outcome of one benchmark from its exit code; the status file only explains it."""
    if code == PASSED:
        return Outcome(name, "passed", seconds)
    if code == MISSED:
        missed = status.get("missed")
        detail = "; ".join(str(m) for m in missed) if isinstance(missed, list) and missed else ""
        return Outcome(name, "missed", seconds, detail or "see its report")
    why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    said = status.get("error") or (last_lines[-1] if last_lines else "")
    return Outcome(name, "failed", seconds, f"{why}: {said}" if said else why)


def run_one(name: str, bench_dir: Path, stop: _Stop, out: TextIO) -> Outcome:
    script = bench_dir / f"{name}.py"
    if not script.is_file():
        return Outcome(name, "failed", 0.0, f"no benchmark {script}")
    print(f"== bench/{name}.py", file=out, flush=True)
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        status = Path(tmp) / "status.json"
        env = {**os.environ, STATUS_ENV: str(status), "PYTHONUNBUFFERED": "1"}
        t0 = time.monotonic()
        last: deque[str] = deque(maxlen=3)
        stop.proc = proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", env=env, cwd=bench_dir.parent)
        assert proc.stdout is not None
        code = None
        while code is None:
            try:
                for line in proc.stdout:
                    out.write(line)
                    out.flush()
                    if line.strip():
                        last.append(line.rstrip())
                code = proc.wait()
            except KeyboardInterrupt:  # the benchmark got it too: show it cleaning up
                stop.asked = True
        stop.proc = None
        return judge(name, code, _read_status(status), list(last), time.monotonic() - t0)


def summary(outcomes: Sequence[Outcome], seconds: float) -> str:
    counts = {state: sum(o.state == state for o in outcomes) for state in WORDS}
    said = ", ".join(f"{n} {WORDS[state]}" for state, n in counts.items() if n)
    width = max((len(o.name) for o in outcomes), default=0)
    lines = [f"make bench: {len(outcomes)} benchmarks in {seconds / 60:.1f} min: {said}"]
    for o in outcomes:
        took = f"{o.seconds / 60:5.1f} min" if o.state != "skipped" else " " * 9
        lines.append(f"  {WORDS[o.state]:13}  {o.name:{width}}  {took}  {o.detail}".rstrip())
    return "\n".join(lines)


def run_all(names: Sequence[str], bench_dir: Path = BENCH_DIR, out: TextIO = sys.stdout
            ) -> tuple[list[Outcome], int]:
    """Run each benchmark; (outcomes, exit status: 1 if any failed, 130 if stopped, else 0)."""
    stop = _Stop()
    previous = signal.signal(signal.SIGTERM, stop.sigterm)
    outcomes: list[Outcome] = []
    try:
        for name in names:
            if stop.asked:
                outcomes.append(Outcome(name, "skipped", detail="the run was stopped"))
                continue
            try:
                outcomes.append(run_one(name, bench_dir, stop, out))
            except KeyboardInterrupt:  # between two benchmarks
                stop.asked = True
                outcomes.append(Outcome(name, "skipped", detail="the run was stopped"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stop.asked:
        return outcomes, 130
    return outcomes, 1 if any(o.state == "failed" for o in outcomes) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("benches", nargs="+", metavar="NAME", help="bench/NAME.py, in this order")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    outcomes, code = run_all(args.benches)
    print(summary(outcomes, time.monotonic() - t0), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
