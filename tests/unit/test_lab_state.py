"""corral.lab.state: the lab's state file and the names `corral lab down` sweeps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from corral.cli.main import app as cli_app
from corral.errors import InvalidInput
from corral.lab import _procs, cluster, state
from corral.lab.state import EngineRecord, HostRecord, LabState


def _lab(tmp_path: Path, prefix: str = "lab") -> LabState:
    st = LabState(root=str(tmp_path), prefix=prefix, storage="shared",
                  shared_dir=str(tmp_path / "shared"))
    st.engine = EngineRecord(netns=f"corral-{prefix}0", veth=f"crl-{prefix}0", index=1,
                             address="10.209.1.2", port=8443, data_dir=str(tmp_path / "engine"),
                             pid=1234)
    for n in (1, 2):
        st.hosts[f"{prefix}{n}"] = HostRecord(
            name=f"{prefix}{n}", number=n, index=n + 1, root_dir=str(tmp_path / "hosts" / f"{n}"),
            address=f"10.209.{n + 1}.2", agent_pid=2000 + n)
    return st


def test_state_round_trips_through_the_file(tmp_path: Path) -> None:
    st = _lab(tmp_path)
    st.hosts["lab2"].cut = True
    st.remote, st.previous_remote = "lab", "local"
    state.save(st)
    assert (tmp_path / "lab.json").stat().st_mode & 0o777 == 0o600
    assert state.load(tmp_path) == st
    assert not (tmp_path / "lab.json.tmp").exists()


def test_no_state_file_is_no_lab(tmp_path: Path) -> None:
    assert state.load(tmp_path) is None
    state.remove(tmp_path)  # removing what is not there is fine


@pytest.mark.parametrize("text", ["not json", "{}", json.dumps({"version": 99}),
                                  json.dumps({"version": 1, "root": "/x", "prefix": "BAD1"})])
def test_a_broken_state_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "lab.json").write_text(text)
    with pytest.raises(InvalidInput) as exc:
        state.load(tmp_path)
    assert "lab down" in exc.value.message


@pytest.mark.parametrize("prefix", ["", "Lab", "lab1", "toolong", "a-b"])
def test_prefix_is_one_to_five_letters(prefix: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        state.check_prefix(prefix)
    assert exc.value.field == "prefix"


def test_names_of_a_lab_are_its_prefix_and_a_number() -> None:
    assert state.number_of("lab", "lab12") == 12
    assert state.number_of("lab", "lab0") == 0
    # Another lab's names, or a prefix of ours followed by letters, are not ours.
    for other in ("la1", "labx1", "lab", "lab1a", "xlab1", "nlab1"):
        assert state.number_of("lab", other) is None
    assert state.number_of("la", "lab1") is None


def test_next_number_fills_gaps_and_indexes_are_all_counted(tmp_path: Path) -> None:
    st = _lab(tmp_path)
    assert st.next_number() == 3
    del st.hosts["lab1"]
    assert st.next_number() == 1
    assert st.used_indexes() == {1, 3}


def test_sweep_takes_recorded_and_named_things_hosts_before_engine(tmp_path: Path) -> None:
    st = _lab(tmp_path)
    netns = ["corral-lab0", "corral-lab1", "corral-lab7", "corral-n1f2a", "corral-la1",
             "corral-lab-router"]
    links = ["lo", "eth0", "crl-lab1", "crl-lab9", "crl-n1f2a", "corral0"]
    rlinks = ["lo", "crr-lab1", "crr-lab8", "crr-t12ab"]
    t = state.sweep_targets(st, "lab", netns, links, rlinks)
    # lab2 (recorded, already gone), lab7/8/9 (left by a crash, found by name); never the
    # node fixture's n1f2a, a lab `la`, the shared router or another test's t12ab.
    assert t.netns == ["corral-lab9", "corral-lab8", "corral-lab7", "corral-lab2",
                       "corral-lab1", "corral-lab0"]
    assert t.veths == [n.replace("corral-", "crl-") for n in t.netns]
    assert t.router_links == [n.replace("corral-", "crr-") for n in t.netns]


def test_sweep_without_state_finds_by_name_only() -> None:
    t = state.sweep_targets(None, "qz", ["corral-qz0", "corral-qz3", "corral-lab1"],
                            ["crl-qz3"], [])
    assert t.netns == ["corral-qz3", "corral-qz0"]
    assert state.sweep_targets(None, "qz", [], [], []).netns == []


# -- the CLI's refusals, before anything is made (no root, no namespace needed) -----------

def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args))


@pytest.mark.parametrize(("args", "says"), [
    (["--hosts", "0"], "--hosts"),
    (["--storage", "nfs"], "none, shared, rbd"),
    (["--prefix", "Lab1"], "1-5 letters"),
])
def test_lab_up_refuses_bad_options_clearly(tmp_path: Path, args: list[str], says: str) -> None:
    result = _cli("lab", "up", "--root", str(tmp_path / "lab"), *args)
    assert result.exit_code == 2
    assert says in result.output
    assert not (tmp_path / "lab").exists()  # nothing made


def test_lab_commands_without_a_lab_say_so(tmp_path: Path) -> None:
    for args in (["status"], ["fault", "lab1", "power-off"], ["add-host"]):
        result = _cli("lab", *args, "--root", str(tmp_path))
        assert result.exit_code == 2, args
        assert "no lab at" in result.output and "lab up" in result.output


def test_lab_fault_names_the_faults_and_the_hosts(tmp_path: Path) -> None:
    state.save(_lab(tmp_path))
    bad = _cli("lab", "fault", "lab1", "explode", "--root", str(tmp_path))
    assert bad.exit_code == 2 and "power-off" in bad.output and "kill-libvirtd" in bad.output
    unknown = _cli("lab", "fault", "lab9", "power-off", "--root", str(tmp_path))
    assert unknown.exit_code == 2 and "lab1, lab2" in unknown.output


def test_cut_network_rules_drop_everything_but_loopback_both_ways() -> None:
    rules = cluster._cut_rules()
    assert f"table inet {state.CUT_TABLE}" in rules
    for hook in ("input", "output", "forward"):
        assert f"hook {hook} priority -400; policy drop;" in rules
    assert 'iifname "lo" accept' in rules and 'oifname "lo" accept' in rules


def test_an_older_state_file_without_the_engines_argv_loads(tmp_path: Path) -> None:
    data = json.loads(_lab(tmp_path).to_json())
    del data["engine"]["argv"]
    (tmp_path / "lab.json").write_text(json.dumps(data))
    st = state.load(tmp_path)
    assert st is not None and st.engine is not None and st.engine.argv == []
    said = _cli("lab", "engine", "start", "--root", str(tmp_path))
    assert said.exit_code == 2 and "older `lab up`" in said.output


def test_lab_engine_stops_and_starts_the_engine_as_lab_up_ran_it(tmp_path: Path) -> None:
    """`lab engine start` runs the recorded `corral up --detach` again (here a stand-in that
    leaves a sleeper and its pid file, as the engine does); `stop` ends it."""
    engine_dir = tmp_path / "engine"
    engine_dir.mkdir()
    st = _lab(tmp_path)
    assert st.engine is not None
    st.engine.pid = None
    st.engine.argv = [sys.executable, "-c", (
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(120)'], start_new_session=True, stdin=subprocess.DEVNULL, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        f"open({str(engine_dir / 'engine.pid')!r}, 'w').write(str(p.pid))")]
    state.save(st)
    root = ["--root", str(tmp_path)]
    bad = _cli("lab", "engine", "restart", *root)
    assert bad.exit_code == 2 and "stop, start" in bad.output
    assert _cli("lab", "engine", "stop", *root).exit_code == 2  # not running: says so
    started = _cli("lab", "engine", "start", *root)
    assert started.exit_code == 0, started.output
    pid = state.load(tmp_path).engine.pid  # type: ignore[union-attr]
    try:
        assert pid is not None and _procs.is_alive(pid)
        again = _cli("lab", "engine", "start", *root)
        assert again.exit_code == 2 and f"pid {pid}" in again.output
        stopped = _cli("lab", "engine", "stop", *root)
        assert stopped.exit_code == 0 and f"engine {pid} stopped" in stopped.output
        assert not _procs.is_alive(pid)
        assert state.load(tmp_path).engine.pid is None  # type: ignore[union-attr]
    finally:
        if pid is not None:
            _procs.kill_and_wait([pid])
