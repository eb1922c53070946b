"""The fence-agent runner (corral.engine.fencing): names looked up, never paths; options on
stdin; exit statuses read as the protocol says, with Debian's real fence_dummy and small
agents of our own that fail, hang or lie."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fence_scripts import install

from corral.engine.fencing import check_name, find_agent, run_agent
from corral.engine.fencing.protocol import stdin_text
from corral.errors import InvalidInput

needs_dummy = pytest.mark.skipif(shutil.which("fence_dummy", path="/usr/sbin") is None,
                                 reason="Debian's fence-agents not installed "
                                        "(scripts/install-deps.sh)")


@pytest.fixture
def agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install(tmp_path / "agents", monkeypatch)


@pytest.mark.parametrize("name", ["/usr/sbin/fence_dummy", "../fence_x", "fence_a b",
                                  "fence_x;id", "ipmitool", "fence_", "FENCE_X", ""])
def test_a_name_that_is_a_path_or_odd_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as e:
        check_name(name)
    assert e.value.field == "agent"


def test_a_missing_agent_is_a_422_saying_where_it_looked() -> None:
    with pytest.raises(InvalidInput, match=r"/usr/sbin.*fence-agents"):
        find_agent("fence_nosuchthing")


@needs_dummy
def test_fence_dummy_off_on_and_status_by_the_protocol(tmp_path: Path) -> None:
    dummy = find_agent("fence_dummy")
    assert dummy == Path("/usr/sbin/fence_dummy")
    opts = {"status_file": str(tmp_path / "power")}
    assert run_agent(dummy, "on", opts).ok
    assert run_agent(dummy, "status", opts).power == "on"
    off = run_agent(dummy, "off", opts)
    assert off.ok and off.code == 0
    status = run_agent(dummy, "status", opts)
    assert status.code == 2 and status.power == "off"
    assert "</resource-agent>" in run_agent(dummy, "metadata", {}).stdout  # its tail


def test_a_failing_agent_keeps_its_reason(agents: Path) -> None:
    run = run_agent(find_agent("fence_test_fail"), "off", {})
    assert not run.ok and run.power is None
    assert run.reason() == "off: exit 1: Failed: unable to connect to BMC"


def test_an_agent_past_its_timeout_is_killed_and_is_an_error(agents: Path) -> None:
    run = run_agent(find_agent("fence_test_hang"), "status", {}, timeout_s=0.5)
    assert run.code is None and run.power is None and not run.ok
    assert "no answer in time" in run.reason()


def test_options_and_secrets_go_on_stdin_never_in_argv(
        agents: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    echo = tmp_path / "echo.txt"
    monkeypatch.setenv("FENCE_ECHO", str(echo))
    assert run_agent(find_agent("fence_test_echo"), "status",
                     {"ip": "10.0.0.5", "password": "s3cret"}).ok
    argv, *lines = echo.read_text().splitlines()
    assert argv == "argv: "
    assert lines == ["action=status", "ip=10.0.0.5", "password=s3cret"]


@pytest.mark.parametrize("value", ["a\naction=on", "a\rb", "a\0b"])
def test_a_value_with_a_line_break_cannot_smuggle_an_option(value: str) -> None:
    with pytest.raises(InvalidInput, match="line break"):
        stdin_text("off", {"ip": value})


def test_an_unknown_action_is_refused(agents: Path) -> None:
    with pytest.raises(InvalidInput) as e:
        run_agent(find_agent("fence_test_file"), "explode", {})
    assert e.value.field == "action"


def test_a_password_an_agent_prints_back_is_masked(agents: Path) -> None:
    run = run_agent(find_agent("fence_test_blab"), "status",
                    {"ip": "10.0.0.5", "password": "s3cret-pw"})
    assert "s3cret-pw" not in run.stderr + run.reason()
    assert "password=***" in run.stderr and "ip=10.0.0.5" in run.stderr
