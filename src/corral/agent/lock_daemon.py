"""Watch virtlockd, the lock daemon that holds this host's disk leases (docs/ha.md "Disk
leases").

A killed virtlockd drops every lease it held while the QEMUs that opened the disks keep
running: another host could then start the same VM on the same disk (measured, DESIGN.md).
Its death must never silently remove the protection, so a thread checks its pid every
``PERIOD_S``; once it is gone, :func:`recover`:

1. kills libvirtd (its guests keep running; it would otherwise report the QEMUs' deaths while it cannot
   start anything, and its lockd plugin registered the lockspace with the dead daemon only);
2. kills every QEMU of this host (SIGKILL by libvirt's pid files, as a watchdog would):
   their leases are gone, they could run twice;
3. starts virtlockd again, then libvirtd with the command line it had (it registers the
   lockspace with the new virtlockd and finds its guests shut off).

The engine's restart in place (HA VMs) then starts them again, each with a fresh lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PERIOD_S = 0.5
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
QEMU_PID_DIR = Path("/run/libvirt/qemu")


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def daemon_alive(pidfile: Path, comm: str = "virtlockd") -> bool:
    """Whether the process named in ``pidfile`` lives and is ``comm`` (not a reused pid)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    return _comm(pid) == comm


def own_pids(comm: str) -> list[int]:
    """Processes named ``comm`` in this process's mount namespace (a lab host's own daemon,
    not another lab host's: they share the pid namespace)."""
    mine = os.readlink("/proc/self/ns/mnt")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _comm(int(entry)) != comm:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/mnt") == mine:
                found.append(int(entry))
        except OSError:
            continue
    return sorted(found)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _comm(p) is not None]
    return left


def stop_libvirtd() -> list[str] | None:
    """Stop this host's libvirtd (its guests keep running); its command line to start it
    again, None when none ran."""
    pids = own_pids("libvirtd")
    if not pids:
        return None
    argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    # SIGKILL, not SIGTERM: a libvirtd shutting down with guests took seconds, while calls
    # of the agent's reporter hung on it and the engine fenced the host for lost heartbeats.
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, STOP_TIMEOUT_S)
    return [a.decode() for a in argv]


def kill_qemus(pid_dir: Path = QEMU_PID_DIR) -> list[str]:
    """SIGKILL every QEMU named by libvirt's pid files; returns the domains' names."""
    killed = []
    for pidfile in sorted(pid_dir.glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if not (_comm(pid) or "").startswith("qemu"):
            continue  # a stale file (a pid reused since)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pidfile.stem)
        _wait_gone([pid], STOP_TIMEOUT_S)
    return killed


def _start(argv: list[str]) -> None:
    # No pipes: a daemon (-d) keeps inherited ones open and run() would wait for them.
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=START_TIMEOUT_S)


def recover(pidfile: Path, start: Callable[[list[str]], None] = _start,
            stop_libvirt: Callable[[], list[str] | None] = stop_libvirtd,
            kill: Callable[[], list[str]] = kill_qemus) -> list[str]:
    """The lock daemon died: the steps of the module docstring. Returns the domains killed."""
    libvirtd_argv = stop_libvirt()
    killed = kill()
    log.error("virtlockd (%s) is gone, and its disk leases with it: killed the QEMU of %s; "
              "starting virtlockd and libvirtd again", pidfile, ", ".join(killed) or "no domain")
    try:
        start(["virtlockd", "-d", "-p", str(pidfile)])
    finally:  # libvirtd back even so (its guests' states, the engine's answers)
        if libvirtd_argv is not None:
            start(libvirtd_argv)
    return killed


class LockDaemonWatch:
    """The thread that keeps disk leases honest; :meth:`check` is one round of it."""

    def __init__(self, pidfile: Path, *,
                 alive: Callable[[Path], bool] = daemon_alive,
                 on_death: Callable[[Path], list[str]] = recover,
                 period_s: float = PERIOD_S) -> None:
        self.pidfile, self.period_s = pidfile, period_s
        self._alive, self._on_death = alive, on_death
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str] | None:
        """None while the daemon lives; else the domains killed before it was started
        again (a failed start is logged and tried again next round)."""
        if self._alive(self.pidfile):
            return None
        try:
            return self._on_death(self.pidfile)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("recovering from virtlockd's death failed: %s", exc)
            return []

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.check()
            except Exception:  # never let the watch die with one round
                log.exception("watching virtlockd failed; next round in %.1f s", self.period_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="lock-daemon-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
