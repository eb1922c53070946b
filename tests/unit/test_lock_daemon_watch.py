"""The agent's watch of virtlockd (corral.agent.lock_daemon): when the lock daemon is gone,
libvirtd is stopped, the host's QEMUs killed, then virtlockd and libvirtd started again."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent import lock_daemon
from corral.agent.__main__ import _run_argv, parser
from corral.agent.lock_daemon import LockDaemonWatch, daemon_alive, recover


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        comm = Path(f"/proc/{proc.pid}/comm")
        for _ in range(200):  # until it has exec'd (its name is ours before that)
            if comm.read_text().strip() == "sleep":
                break
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_daemon_counts_alive_only_when_its_pid_runs_that_program(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    pidfile = tmp_path / "virtlockd.pid"
    assert not daemon_alive(pidfile)  # no pid file: gone
    pidfile.write_text(f"{sleeper.pid}\n")
    assert daemon_alive(pidfile, comm="sleep")
    assert not daemon_alive(pidfile)  # a pid reused by another program
    pidfile.write_text("garbage")
    assert not daemon_alive(pidfile)


def test_own_pids_finds_processes_of_this_mount_namespace(
        sleeper: subprocess.Popen[bytes]) -> None:
    assert sleeper.pid in lock_daemon.own_pids("sleep")
    assert lock_daemon.own_pids("no-such-daemon") == []


def test_only_a_qemu_named_by_a_pid_file_is_killed(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (tmp_path / "vm1.pid").write_text(str(sleeper.pid))  # a stale file: the pid is `sleep`
    (tmp_path / "vm2.pid").write_text("garbage")
    assert lock_daemon.kill_qemus(tmp_path) == []
    assert sleeper.poll() is None


def test_a_living_daemon_leaves_everything_alone() -> None:
    deaths: list[Path] = []

    def on_death(p: Path) -> list[str]:
        deaths.append(p)
        return []

    watch = LockDaemonWatch(Path("/x.pid"), alive=lambda _p: True, on_death=on_death)
    assert watch.check() is None and deaths == []


def test_recovery_stops_libvirtd_kills_the_qemus_then_starts_both_daemons() -> None:
    order: list[str] = []

    def stop() -> list[str]:
        order.append("stop libvirtd")
        return ["libvirtd", "-d", "--listen"]

    def kill() -> list[str]:
        order.append("kill qemus")
        return ["vm1", "vm3"]

    killed = recover(Path("/run/virtlockd.pid"), start=lambda argv: order.append(" ".join(argv)),
                     stop_libvirt=stop, kill=kill)
    assert killed == ["vm1", "vm3"]
    assert order == ["stop libvirtd", "kill qemus", "virtlockd -d -p /run/virtlockd.pid",
                     "libvirtd -d --listen"]


def test_libvirtd_is_started_again_even_when_virtlockd_does_not_start() -> None:
    started: list[list[str]] = []

    def start(argv: list[str]) -> None:
        started.append(argv)
        if argv[0] == "virtlockd":
            raise subprocess.CalledProcessError(1, argv)

    watch = LockDaemonWatch(
        Path("/x.pid"), alive=lambda _p: False,
        on_death=lambda p: recover(p, start=start, stop_libvirt=lambda: ["libvirtd", "-d"],
                                   kill=lambda: []))
    assert watch.check() == []  # logged; tried again next round
    assert [a[0] for a in started] == ["virtlockd", "libvirtd"]


def test_the_agent_takes_the_pidfile_and_keeps_it_across_join() -> None:
    args = parser().parse_args(["join", "https://e:1", "--token", "t", "--state-dir", "/s",
                                "--lock-daemon-pidfile", "/run/virtlockd.pid"])
    argv = _run_argv(args)
    assert argv[argv.index("--lock-daemon-pidfile") + 1] == "/run/virtlockd.pid"
    plain = _run_argv(parser().parse_args(["run", "--state-dir", "/s"]))
    assert "--lock-daemon-pidfile" not in plain
