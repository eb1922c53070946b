"""`make bench` without the benchmarks: the driver (bench/all.py) on fake benchmarks, the exit
codes of bench/outcome.py, the boot-wait errors of bench/guests.py, the provenance line
that bench/sections.py puts into every section of docs/benchmarks.md and the main() of the
benchmarks (bench/benchmain.py) on fake bodies."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, ModuleType]]:
    """bench/'s modules, imported the way its scripts import each other (bench/ on the path)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name)
               for name in ("all", "outcome", "guests", "sections", "report", "benchmain")}
    finally:
        sys.path.remove(str(BENCH))


FAKES = {
    "ok": "import sys; sys.exit(0)",
    "slow_miss": ("import json, os, sys\n"
                  "open(os.environ['CORRAL_BENCH_STATUS'], 'w').write(json.dumps("
                  "{'outcome': 'missed', 'missed': ['ratio 1.30 > 1.15'], 'error': None}))\n"
                  "sys.exit(3)"),
    "boom": "print('setting up'); raise RuntimeError('the lab host did not start')",
    "not_root": "import sys; print('needs root', file=sys.stderr); sys.exit(2)",
}


def _fakes(tmp_path: Path) -> Path:
    for name, code in FAKES.items():
        # each leaves a mark: the driver ran it even after an earlier one failed
        (tmp_path / f"{name}.py").write_text(
            f"from pathlib import Path\nPath(__file__).with_suffix('.ran').touch()\n{code}\n")
    return tmp_path


def test_every_benchmark_runs_and_the_summary_says_how_each_ended(
        bench: dict[str, ModuleType], tmp_path: Path) -> None:
    out = io.StringIO()
    names = ["boom", "ok", "nope", "slow_miss", "not_root"]
    outcomes, code = bench["all"].run_all(names, _fakes(tmp_path), out)
    assert code == 1  # some failed
    assert [(o.name, o.state) for o in outcomes] == [
        ("boom", "failed"), ("ok", "passed"), ("nope", "failed"), ("slow_miss", "missed"),
        ("not_root", "failed")]
    assert all((tmp_path / f"{n}.ran").exists() for n in FAKES)
    text = bench["all"].summary(outcomes, 60.0)
    assert text.splitlines()[0] == ("make bench: 5 benchmarks in 1.0 min: 1 passed, "
                                    "1 missed target, 3 FAILED")
    rows = text.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["FAILED", "passed", "FAILED", "missed", "FAILED"]
    assert rows[0].endswith("exit 1: RuntimeError: the lab host did not start")
    assert rows[2].split()[1:3] == ["nope", "0.0"] and "no benchmark" in rows[2]
    assert rows[3].endswith("ratio 1.30 > 1.15")
    assert rows[4].endswith("exit 2: needs root")
    assert "== bench/boom.py" in out.getvalue() and "setting up" in out.getvalue()


def test_missed_targets_alone_do_not_fail_the_run(bench: dict[str, ModuleType],
                                                  tmp_path: Path) -> None:
    outcomes, code = bench["all"].run_all(["ok", "slow_miss"], _fakes(tmp_path), io.StringIO())
    assert code == 0
    assert [o.state for o in outcomes] == ["passed", "missed"]


def test_finish_exit_codes_and_status_file(bench: dict[str, ModuleType], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    finish, status = bench["outcome"].finish, tmp_path / "status.json"
    monkeypatch.setenv(bench["outcome"].STATUS_ENV, str(status))
    assert finish(None) == 0
    assert json.loads(status.read_text())["outcome"] == "passed"
    assert finish(None, ["p99 25 ms >= 20 ms"]) == 3
    assert json.loads(status.read_text())["missed"] == ["p99 25 ms >= 20 ms"]
    assert finish("BenchError: timed out\n--- vm: console ---\nlast line", ["x"]) == 1
    assert json.loads(status.read_text()) == {"outcome": "failed", "missed": ["x"],
                                              "error": "BenchError: timed out"}


class FakeClient:
    """console_log of the SDK: br-01 boots, br-02 hangs in its initramfs, br-03 is gone."""

    def console_log(self, name: str) -> str:
        if name == "br-03":
            raise RuntimeError("404 VM br-03 not found")
        lines = [f"\x1b[0m[    {i}.0] line {i}\r" for i in range(40)]
        if name == "br-01":
            lines.append("CORRAL-TINY-BOOTED")
        return "\n".join(lines) + "\n"


def test_a_boot_wait_that_runs_out_names_the_guests_and_shows_their_consoles(
        bench: dict[str, ModuleType]) -> None:
    with pytest.raises(Exception, match="waiting for 2 guests to boot") as info:
        bench["guests"].wait_booted(FakeClient(), ["br-02", "br-01"], timeout=0.05, every=0.01)
    first, *rest = str(info.value).splitlines()
    assert first == ("timed out after 0.05 s waiting for 2 guests to boot; not booted (1 of 2): "
                     "br-02")
    assert rest[0] == "--- br-02: last 15 lines of its console ---"
    assert rest[1:] == [f"[    {i}.0] line {i}" for i in range(25, 40)]  # no escapes, no \r


def test_a_console_that_cannot_be_read_is_said_so(bench: dict[str, ModuleType]) -> None:
    err = bench["guests"].not_booted("3 guests to boot", 600, {"br-03", "br-02"}, 3,
                                     FakeClient().console_log)
    lines = str(err).splitlines()
    assert lines[0].endswith("not booted (2 of 3): br-02, br-03")
    assert lines[-2:] == ["--- br-03: last 15 lines of its console ---",
                          "(console log not readable: RuntimeError: 404 VM br-03 not found)"]


def test_a_boot_wait_returns_once_every_guest_booted(bench: dict[str, ModuleType]) -> None:
    assert bench["guests"].wait_booted(FakeClient(), ["br-01"], timeout=1, every=0.01) < 1


def test_every_section_says_which_commit_and_when(bench: dict[str, ModuleType],
                                                  tmp_path: Path) -> None:
    sections = bench["sections"]
    commit = sections.commit()
    assert re.fullmatch(r"[0-9a-f]{4,40}(\+dirty)?|unknown", commit)
    report = tmp_path / "benchmarks.md"
    measured = sections.Measured.now()
    sections.write_section(report, "a", "## A\n\nfigures of A", measured)
    sections.write_section(report, "b", "## B\n\nfigures of B")  # measured now
    sections.write_section(report, "a", "## A\n\nnew figures of A", measured)
    text = report.read_text()
    assert text.count("Measured commit `") == 2
    a = text.split("<!-- a -->")[1].split("<!-- /a -->")[0].strip().splitlines()
    assert a[0] == "## A" and a[1] == "" and a[3] == "" and a[4] == "new figures of A"
    assert a[2].startswith(f"Measured commit `{measured.commit}` (`git rev-parse --short HEAD`")
    assert a[2].endswith(f"run started {measured.started:%Y-%m-%d %H:%M} UTC.")
    assert ("+dirty: the working tree had uncommitted changes" in a[2]) == measured.dirty
    assert "figures of B" in text and "figures of A\n" not in text.replace("new figures", "")


def test_dirty_flag(bench: dict[str, ModuleType]) -> None:
    from datetime import UTC, datetime

    m = bench["sections"].Measured("abc1234+dirty", datetime(2025, 1, 2, 3, 4, tzinfo=UTC))
    assert m.dirty and m.line() == (
        "Measured commit `abc1234+dirty` (`git rev-parse --short HEAD`; +dirty: the working "
        "tree had uncommitted changes), run started 2025-01-02 03:04 UTC.")


def test_an_error_with_console_tails_is_a_fenced_block_in_the_report(
        bench: dict[str, ModuleType]) -> None:
    report = bench["report"]
    run = report.Run(started="2025-01-02 03:04 UTC",
                     error="BenchError: timed out after 600 s waiting for 20 guests to boot; "
                           "not booted (1 of 20): br-07\n--- br-07: last 15 lines of its "
                           "console ---\nKernel panic")
    md = report.markdown(run)
    assert ("**The run did not finish:** BenchError: timed out after 600 s waiting for 20 "
            "guests to boot; not booted (1 of 20): br-07\n\n```\n--- br-07") in md
    assert "Kernel panic\n```" in md


@dataclass
class FakeResult:
    errors: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


def _run_bench(bench: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
               argv: list[str], body: Callable[[FakeResult, argparse.Namespace], None],
               lab_root: Path | None = None) -> tuple[int, Path, Path]:
    """bench/fake.py run by benchmain.run_bench: its exit code, report and status file."""
    main = bench["benchmain"]
    monkeypatch.setattr(main, "sigterm_exits", lambda: None)  # not in the test's process
    report, status = tmp_path / "benchmarks.md", tmp_path / "status.json"
    monkeypatch.setenv(bench["outcome"].STATUS_ENV, str(status))
    monkeypatch.setattr(sys, "argv", ["fake.py", *argv, "--report", str(report)])

    def section(res: FakeResult, ran: Any) -> tuple[str, list[str]]:
        missed = [] if ran.args.runs < 3 else [f"runs {ran.args.runs} >= 3"]
        return (f"## Fake\n\n{ran.args.runs} runs from {ran.started}, errors "
                f"{res.errors}; facts {sorted(res.facts)}"), missed

    code = main.run_bench(
        "fake", "A fake.\n\nMore.", report, lab_root=lab_root,
        options=lambda p: p.add_argument("--runs", type=int, default=2), positive=["runs"],
        result=lambda _args, facts: FakeResult(facts=facts), body=body, section=section)
    return code, report, status


def test_a_bench_that_fails_still_writes_its_section_with_the_error(
        bench: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    def body(res: FakeResult, args: argparse.Namespace) -> None:
        res.facts["lab set-up"] = "9 s"
        raise RuntimeError("the lab host did not start")

    code, report, status = _run_bench(bench, monkeypatch, tmp_path, [], body)
    assert code == 1
    text = report.read_text()
    assert "<!-- fake -->" in text and "2 runs from " in text
    assert "errors ['RuntimeError: the lab host did not start']" in text
    assert ("facts ['Python', 'lab set-up', 'load average at the end', "
            "'load average at the start', 'machine']") in text
    assert "2 runs from " in capsys.readouterr().out
    assert json.loads(status.read_text())["error"] == "RuntimeError: the lab host did not start"


def test_a_bench_that_misses_a_target_exits_3(
        bench: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, report, status = _run_bench(bench, monkeypatch, tmp_path, ["--runs", "3"],
                                      lambda res, args: None)
    assert code == 3 and "3 runs from " in report.read_text()
    assert json.loads(status.read_text())["missed"] == ["runs 3 >= 3"]


def test_a_lab_bench_needs_root_and_positive_counts(
        bench: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    def body(res: FakeResult, args: argparse.Namespace) -> None:
        raise AssertionError("the body of a bench that cannot run")

    monkeypatch.setattr(bench["benchmain"].os, "geteuid", lambda: 1000)
    code, report, _ = _run_bench(bench, monkeypatch, tmp_path, [], body, lab_root=tmp_path)
    assert code == 2 and not report.exists()
    assert capsys.readouterr().err == \
        "bench/fake.py needs root (the lab: namespaces, libvirtd)\n"
    with pytest.raises(SystemExit) as info:
        _run_bench(bench, monkeypatch, tmp_path, ["--runs", "0"], body)
    assert info.value.code == 2 and "error: --runs must be >= 1" in capsys.readouterr().err
