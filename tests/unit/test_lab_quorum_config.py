"""`corral lab` and corosync, without namespaces: when a lab runs it, what its state says,
what a lab host's agent and guard are given (the lab itself: test_lab_quorum)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import app as cli_app
from corral.errors import Unavailable, WrongState
from corral.lab import cluster, state
from corral.lab.host import LabHost
from corral.lab.state import LabState


@pytest.fixture
def corosync_installed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    installed = [True]
    monkeypatch.setattr("corral.lab.cluster.shutil.which",
                        lambda cmd: f"/usr/sbin/{cmd}" if installed[0] else None)
    return installed


@pytest.mark.parametrize(("hosts", "asked", "want"), [
    (1, None, False), (2, None, False), (3, None, True), (5, None, True),
    (2, True, True), (3, False, False),
])
def test_quorum_by_default_from_three_hosts(corosync_installed: list[bool], hosts: int,
                                            asked: bool | None, want: bool) -> None:
    assert cluster._want_quorum(hosts, asked) is want


def test_without_corosync_no_quorum_by_default_and_asking_is_refused(
        corosync_installed: list[bool]) -> None:
    corosync_installed[0] = False
    assert cluster._want_quorum(3, None) is False
    with pytest.raises(Unavailable, match="apt-get install corosync"):
        cluster._want_quorum(3, True)


def test_lab_up_quorum_without_corosync_says_so_and_makes_nothing(
        tmp_path: Path, corosync_installed: list[bool]) -> None:
    corosync_installed[0] = False
    result = CliRunner().invoke(cli_app, ["lab", "up", "--root", str(tmp_path / "lab"),
                                          "--hosts", "3", "--quorum"])
    assert result.exit_code != 0
    assert "needs corosync" in result.output
    assert not (tmp_path / "lab").exists()


def test_state_keeps_quorum_and_older_files_have_none(tmp_path: Path) -> None:
    st = LabState(root=str(tmp_path), prefix="lab", quorum=True)
    state.save(st)
    assert state.load(tmp_path) == st
    data = json.loads(st.to_json())
    del data["quorum"]
    (tmp_path / "lab.json").write_text(json.dumps(data))
    loaded = state.load(tmp_path)
    assert loaded is not None and loaded.quorum is False


def test_a_lab_host_with_quorum_gives_its_guard_the_start_argv(tmp_path: Path) -> None:
    host = LabHost("lab1", 1, tmp_path)
    assert host.quorum_start_argv() is None
    assert cluster._quorum_option(host) == ["--quorum", "none"]
    with pytest.raises(WrongState, match="runs no corosync"):
        host.write_corosync_conf("totem {}\n")
    host.corosync_conf().parent.mkdir()  # as start() makes it for LabHost(..., quorum=True)
    argv = host.quorum_start_argv()
    assert argv == ["corosync", "-c", str(tmp_path / "corosync" / "corosync.conf")]
    assert cluster._quorum_option(host) == ["--quorum", "corosync"]
    host.write_corosync_conf("totem {}\n")
    assert host.corosync_conf().read_text() == "totem {}\n"
    assert host.daemon_pid("corosync") is None  # none runs
