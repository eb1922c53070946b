"""`fence_corral_lab`, the lab's fence agent, as the engine runs it (found next to the
venv's Python, options on stdin): its metadata, its refusals, and the power of a lab host
that has no process (off) read from a lab's state file. Powering real lab hosts is
tests/integration/test_lab_fence.py."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.engine.fencing import find_agent, run_agent
from corral.lab import state
from corral.lab.fence_agent import parse


@pytest.fixture
def lab_root() -> Iterator[Path]:
    """A lab's state with one host, lab7, whose namespaces do not exist (powered off). In a
    short directory of its own: a lab host's unix sockets must fit in 108 bytes, and pytest's
    tmp_path is longer under pytest-xdist (.../popen-gw0/...)."""
    root = Path(tempfile.mkdtemp(prefix="corral-fence-"))
    try:
        st = state.LabState(root=str(root), prefix="lab")
        st.hosts["lab7"] = state.HostRecord(name="lab7", number=7, index=97,
                                            root_dir=str(root / "hosts" / "lab7"),
                                            address="10.209.97.2", powered=False)
        state.save(st)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_engine_finds_it_next_to_its_python() -> None:
    agent = find_agent("fence_corral_lab")
    assert agent.name == "fence_corral_lab"
    meta = run_agent(agent, "metadata", {})
    assert meta.ok and 'name="plug"' in meta.stdout and 'name="root"' in meta.stdout


def test_it_says_what_is_missing(lab_root: Path) -> None:
    agent = find_agent("fence_corral_lab")
    assert "root= " in run_agent(agent, "status", {"plug": "lab7"}).reason()
    nolab = run_agent(agent, "status", {"root": str(lab_root / "none"), "plug": "lab7"})
    assert nolab.code == 1 and "no lab at" in nolab.reason()
    nohost = run_agent(agent, "off", {"root": str(lab_root), "plug": "lab9"})
    assert nohost.code == 1 and "no lab host 'lab9'" in nohost.reason()


def test_a_host_with_no_process_is_off_and_off_again_is_done(lab_root: Path) -> None:
    agent = find_agent("fence_corral_lab")
    opts = {"root": str(lab_root), "plug": "lab7"}
    status = run_agent(agent, "status", opts)
    assert status.code == 2 and status.power == "off"
    off = run_agent(agent, "off", {"root": str(lab_root), "port": "lab7"})
    assert off.ok and "Already OFF" in off.stdout
    assert run_agent(agent, "monitor", opts).ok


def test_options_are_read_as_the_protocol_writes_them() -> None:
    assert parse(["action=off", "", "# a comment", "plug = lab1", "root=/a=b"]) == {
        "action": "off", "plug": "lab1", "root": "/a=b"}
