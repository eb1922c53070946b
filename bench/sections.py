"""docs/benchmarks.md is shared by several benchmarks: each owns one marked section.

A section is the text between ``<!-- NAME -->`` and ``<!-- /NAME -->``; writing it replaces
only that section (or appends it), so one benchmark never erases another's results. Every
section says what it measured: the commit (``git rev-parse --short HEAD``, ``+dirty`` when
the working tree had changes) and when the run started (:class:`Measured`, taken at the
start of a run: the tree may change while a long run goes on).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from timing import median

REPO = Path(__file__).resolve().parents[1]
# The reports themselves change with every run: they do not make the tree dirty.
REPORTS = ("docs/benchmarks.md",)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def commit() -> str:
    """``git rev-parse --short HEAD``, plus ``+dirty`` when tracked or untracked files differ
    from it (the reports excepted); ``unknown`` outside a git checkout."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown"
    changes = _git("status", "--porcelain", "--", ".", *(f":(exclude){r}" for r in REPORTS))
    return head.strip() + ("+dirty" if changes is None or changes.strip() else "")


@dataclass(frozen=True)
class Measured:
    """Which commit a run measured, and when it started."""

    commit: str
    started: datetime

    @classmethod
    def now(cls) -> Measured:
        return cls(commit(), datetime.now(UTC))

    def line(self) -> str:
        return (f"Measured commit `{self.commit}` (`git rev-parse --short HEAD`"
                f"{'; +dirty: the working tree had uncommitted changes' if self.dirty else ''}), "
                f"run started {self.started:%Y-%m-%d %H:%M} UTC.")

    @property
    def dirty(self) -> bool:
        return self.commit.endswith("+dirty")


def error_lines(lead: str, error: str) -> list[str]:
    """Markdown of an error: ``lead`` and its first line; what follows (the console tails of
    guests that did not boot, see guests.py) as a fenced block."""
    first, _, rest = error.partition("\n")
    lines = [f"{lead} {first}", ""]
    if rest.strip():
        lines += ["```", rest.strip("\n"), "```", ""]
    return lines


def closing_lines(errors: list[str], facts: dict[str, str]) -> list[str]:
    """The end of a report: its errors (error_lines), then one line of facts."""
    lines = [line for error in errors for line in error_lines("**Error:**", error)]
    return [*lines, "Facts: " + "; ".join(f"{k}: {v}" for k, v in facts.items())]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def with_measured(body: str, measured: Measured) -> str:
    """``body`` with the line of :meth:`Measured.line` after its heading (or first)."""
    lines = body.strip().splitlines()
    at = 1 if lines and lines[0].startswith("#") else 0
    rest = lines[at:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    return "\n".join([*lines[:at], *([""] if at else []), measured.line(), "", *rest])


def write_section(path: Path, name: str, body: str, measured: Measured | None = None) -> None:
    """Replace section ``name`` of the report at ``path`` with ``body`` (without markers),
    saying which commit it measured and when: ``measured``, taken when the run started (if
    None, now: the commit and time of the writing)."""
    begin, end = markers(name)
    section = f"{begin}\n{with_measured(body, measured or Measured.now())}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def p50_max(values: list[float]) -> str:
    """"median s / max s" of a timing's runs ("-" without any)."""
    return f"{median(values):.2f} s / {max(values):.2f} s" if values else "-"


def timed_rows(what: str, short: str, totals: list[float], target_s: float,
               steps: list[tuple[str, list[float]]]) -> tuple[list[str], str | None]:
    """The rows of a failover table (bench/ha_failover.py, ha_lease_failover.py): the target
    row (median and max both under ``target_s``), then one info row per step; and what
    missed, in words (``short``: the measure in a few words), or None."""
    ok = median(totals) < target_s and max(totals) < target_s
    rows = [f"| {what} ({len(totals)} runs) | **{p50_max(totals)}** | < {target_s:g} s "
            f"(median and max) | **{'PASS' if ok else 'MISS'}** |"]
    rows += [f"| {step} | {p50_max(values)} | - | info |" for step, values in steps]
    missed = None if ok else (f"{short} median {median(totals):.2f} s, max "
                              f"{max(totals):.2f} s (target < {target_s:g} s)")
    return rows, missed
