"""corral.agent.quorum: the membership read from corosync-quorumtool -s, as recorded in a
3-host lab (corral lab up --hosts 3, corosync 3.1.7), and when it is read at all."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from corral.agent import quorum
from corral.agent.quorum import QuorumReader, parse_status
from corral.agent_api.reports import Membership

# corosync-quorumtool -s as recorded (exit status in the comment), lab3 cut off by
# `corral lab fault lab3 cut-network`:
_OUTPUTS = Path(__file__).with_name("corosync_outputs")
ALL_THREE = (_OUTPUTS / "all_three_on_lab1.txt").read_text()  # 0
ALL_THREE_QDEVICE_COLUMN = (_OUTPUTS / "all_three_on_lab2_p.txt").read_text()  # 0, with -p
CUT_OFF = (_OUTPUTS / "lab3_cut_on_lab3.txt").read_text()  # 2: alone, not quorate
MAJORITY = (_OUTPUTS / "lab3_cut_on_lab1.txt").read_text()  # 0: lab1 and lab2
# No corosync to ask (exit status 1).
NO_COROSYNC_STDERR = "Cannot initialize CMAP service\n"

LOST = Membership(quorate=False, members=[], ring_id="")


def test_three_members_quorate() -> None:
    assert parse_status(ALL_THREE, 0) == Membership(
        quorate=True, members=["lab1", "lab2", "lab3"], ring_id="1.d")


def _alone_but_flagged_quorate(expected: int, flags: str) -> str:
    """ALL_THREE as a host alone would print it where corosync's own rules keep it quorate
    (two_node, last_man_standing): one member, "Quorate: Yes", exit status 0."""
    head, _, _ = ALL_THREE.partition("Votequorum information")
    return (head.replace("Nodes:            3", "Nodes:            1")
            + "Votequorum information\n----------------------\n"
            f"Expected votes:   {expected}\nHighest expected: {expected}\n"
            f"Total votes:      1\nQuorum:           1\nFlags:            {flags}\n\n"
            "Membership information\n----------------------\n"
            "    Nodeid      Votes Name\n         1          1 lab1 (local)\n")


@pytest.mark.parametrize("expected, flags", [(2, "2Node Quorate WaitForAll"),
                                             (3, "Quorate LastManStanding")])
def test_quorate_by_corosyncs_rules_but_no_majority_is_not_quorate_for_corral(
        expected: int, flags: str) -> None:
    """Both halves of a two_node cluster stay quorate (DESIGN.md): a lease renewed on that
    would outlive the engine's count, so only a strict majority of the votes counts."""
    seen = parse_status(_alone_but_flagged_quorate(expected, flags), 0)
    assert seen == Membership(quorate=False, members=["lab1"], ring_id="1.d")


def test_qdevice_column_is_not_a_name() -> None:
    assert parse_status(ALL_THREE_QDEVICE_COLUMN, 0).members == ["lab1", "lab2", "lab3"]


def test_cut_off_host_sees_itself_alone_and_not_quorate() -> None:
    assert parse_status(CUT_OFF, 2) == Membership(quorate=False, members=["lab3"],
                                                  ring_id="3.11")


def test_majority_sees_two_members_quorate() -> None:
    assert parse_status(MAJORITY, 0) == Membership(quorate=True, members=["lab1", "lab2"],
                                                   ring_id="1.11")


@pytest.mark.parametrize(("text", "code"), [
    ("", 1),  # no corosync
    (ALL_THREE, 1),  # an error status wins over any text
    (ALL_THREE, 2),  # status and text disagree
    (CUT_OFF, 0),
    (ALL_THREE.replace("Ring ID:", "Ring:"), 0),
    (ALL_THREE.split("Membership information")[0], 0),  # no member table
    ("garbage\n", 0),
])
def test_anything_unexpected_reads_as_out_of_the_membership(text: str, code: int) -> None:
    assert parse_status(text, code) == LOST


def _fake_tool(tmp_path: Path, stdout: str, code: int, stderr: str = "") -> str:
    """An executable standing in for corosync-quorumtool: prints ``stdout``, exits ``code``;
    records that it ran."""
    out = tmp_path / "out.txt"
    out.write_text(stdout)
    tool = tmp_path / "corosync-quorumtool"
    tool.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"pathlib.Path({str(tmp_path / 'ran')!r}).touch()\n"
        f"sys.stdout.write(pathlib.Path({str(out)!r}).read_text())\n"
        f"sys.stderr.write({stderr!r})\n"
        f"sys.exit({code})\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return str(tool)


@pytest.fixture
def corosync_runs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether a live corosync is behind the pid file (flip it: state[0] = ...)."""
    state = [True]
    monkeypatch.setattr(quorum, "corosync_runs", lambda _pidfile: state[0])
    return state


def test_auto_without_corosync_is_none_and_spawns_nothing(
        tmp_path: Path, corosync_runs: list[bool]) -> None:
    corosync_runs[0] = False
    reader = QuorumReader("auto", tool=_fake_tool(tmp_path, ALL_THREE, 0))
    assert [reader.read() for _ in range(3)] == [None, None, None]
    assert not (tmp_path / "ran").exists()


def test_auto_finds_corosync_started_later_then_reports_its_loss(
        tmp_path: Path, corosync_runs: list[bool]) -> None:
    corosync_runs[0] = False
    reader = QuorumReader("auto", tool=_fake_tool(tmp_path, ALL_THREE, 0))
    assert reader.read() is None
    corosync_runs[0] = True
    assert reader.read() == parse_status(ALL_THREE, 0)
    corosync_runs[0] = False  # it died, or left with corosync-cfgtool -H
    assert reader.read() == LOST


def test_corosync_mode_reports_a_missing_corosync_as_out(
        tmp_path: Path, corosync_runs: list[bool]) -> None:
    corosync_runs[0] = False
    assert QuorumReader("corosync", tool=_fake_tool(tmp_path, "", 1)).read() == LOST


def test_none_mode_never_reads(tmp_path: Path, corosync_runs: list[bool]) -> None:
    reader = QuorumReader("none", tool=_fake_tool(tmp_path, ALL_THREE, 0))
    assert reader.read() is None
    assert not (tmp_path / "ran").exists()


def test_tool_failure_is_out_of_the_membership(
        tmp_path: Path, corosync_runs: list[bool]) -> None:
    tool = _fake_tool(tmp_path, "", 1, NO_COROSYNC_STDERR)
    assert QuorumReader("corosync", tool=tool).read() == LOST
    assert QuorumReader("corosync", tool=str(tmp_path / "absent")).read() == LOST


def test_cut_off_read_through_the_tool(tmp_path: Path, corosync_runs: list[bool]) -> None:
    reader = QuorumReader("corosync", tool=_fake_tool(tmp_path, CUT_OFF, 2))
    assert reader.read() == Membership(quorate=False, members=["lab3"], ring_id="3.11")


def test_pidfile_must_name_a_live_corosync(tmp_path: Path) -> None:
    pidfile = tmp_path / "corosync.pid"
    assert not quorum.corosync_runs(pidfile)  # absent
    pidfile.write_text("garbage\n")
    assert not quorum.corosync_runs(pidfile)
    pidfile.write_text(f"{os.getpid()}\n")  # alive, but python, not corosync
    assert not quorum.corosync_runs(pidfile)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="one of auto, corosync, none"):
        QuorumReader("pacemaker")
