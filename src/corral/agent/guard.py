"""`corral agent guard`: the host's lease guard, a supervisor standing in for a watchdog.

It runs the agent as its child (restarted whenever it exits) and holds the host's lease
(corral.ha.lease.HostLease). The agent renews it over a socketpair the guard creates for
each child (AF_UNIX SOCK_SEQPACKET, the child's fd in ``CORRAL_GUARD_FD``; its side is
corral.agent.guard_link), one small JSON message each way:

    {"id": n, "renew_at": mono|null, "lease_s": float|null, "armed": bool|null,
     "by": "engine"|"quorum"}      (null or absent: keep what the guard had)
    -> {"id": n, "armed": bool, "left_s": float, "self_fenced": bool}

Times are CLOCK_MONOTONIC, which agent and guard share. When an armed lease lapses the
guard SIGKILLs every QEMU of the host (libvirt's pid files: libvirtd may be the hung part)
and keeps doing so until it is renewed. With the agent dead (or silent for a lease time:
hung) it also takes the host out of the quorum membership (``--leave-command``), so the
engine sees it gone and may restart its VMs elsewhere after the lease time, and rejoins
(``--join-command``) once the engine renews the lease again. Armed starts False: a guard
kills nothing until the engine said the host has HA VMs.

This module stays small (no pydantic, httpx, fastapi): the loop must keep running on a
host whose memory or agent is in trouble. Each tick does bounded work.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import math
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from corral.ha.lease import HostLease

log = logging.getLogger("corral.agent.guard")

ENV_FD = "CORRAL_GUARD_FD"
QEMU_PID_DIR = Path("/run/libvirt/qemu")
TICK_S = 0.15  # how often a lapsed lease looks for QEMUs to kill (and the child is polled)
LEASE_S = 10.0
BACKOFF_FIRST_S, BACKOFF_MAX_S, BACKOFF_RESET_S = 1.0, 10.0, 60.0
SILENT_MIN_S = 3.0  # an agent silent this long (and a lease time) counts as hung
STOP_TIMEOUT_S = 10.0  # SIGTERM: the child's time to exit before SIGKILL
MAX_MSG = 4096
MAX_MSGS_PER_TICK = 64
PR_SET_PDEATHSIG = 1


def is_qemu(pid: int) -> bool:
    """Whether ``pid`` runs a QEMU (argv[0]'s name, so a pid reused since is spared)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(argv0).startswith(b"qemu")


def kill_qemus(pid_dir: Path) -> list[tuple[str, int]]:
    """SIGKILL every QEMU named by libvirt's pid files in ``pid_dir``, without waiting for
    them; the (domain, pid) pairs killed."""
    killed = []
    try:
        files = sorted(pid_dir.glob("*.pid"))
    except OSError:
        return []
    for pidfile in files[:1000]:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if pid <= 1 or not is_qemu(pid):
            continue  # stale (its QEMU gone, or a zombie: no cmdline)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append((pidfile.stem, pid))
    return killed


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved here: the child only calls it


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGTERM when the guard dies, so a guard started
    again (systemd) never finds an old agent holding the port."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class Guard:
    def __init__(self, argv: list[str], *, restart_argv: list[str] | None = None,
                 leave_argv: list[str] | None = None, join_argv: list[str] | None = None,
                 qemu_pid_dir: Path = QEMU_PID_DIR, lease_s: float = LEASE_S,
                 tick_s: float = TICK_S) -> None:
        self.argv, self.restart_argv = argv, restart_argv or argv
        self.leave_argv, self.join_argv = leave_argv, join_argv
        self.qemu_pid_dir, self.tick_s = qemu_pid_dir, tick_s
        self.lease = HostLease(lease_s, enforced=False)  # enforced == armed
        self.lease.until = time.monotonic()  # a finite left_s; nothing enforced until armed
        self.self_fenced = False
        self.left = False  # it took the host out of the membership
        self.child: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.started_at = 0.0
        self.heard_at = 0.0  # the agent's last message (a live agent renews every second)
        self.starts = 0
        self.backoff = BACKOFF_FIRST_S
        self.next_start = 0.0
        self.commands: list[tuple[str, subprocess.Popen[bytes]]] = []  # leave/join running
        self.killed: set[int] = set()  # QEMUs killed since the lease lapsed (logged once)
        self.stopping = False

    # -- the lease -----------------------------------------------------------------------

    def state(self, now: float) -> dict[str, Any]:
        left = self.lease.left_s(now)
        return {"armed": self.lease.enforced, "self_fenced": self.self_fenced,
                "left_s": round(left, 3) if math.isfinite(left) else -1e9}

    def handle(self, msg: dict[str, Any], now: float) -> dict[str, Any]:
        """One message of the agent: a renewal (or, without ``renew_at``, a question)."""
        lease_s = msg.get("lease_s")
        if isinstance(lease_s, (int, float)) and not isinstance(lease_s, bool) \
                and 0 < lease_s <= 3600:
            self.lease.lease_s = float(lease_s)
        armed = msg.get("armed")
        if isinstance(armed, bool) and armed != self.lease.enforced:
            self.lease.enforced = armed
            log.info("lease %s", "armed (the host has HA VMs)" if armed else "disarmed")
        at = msg.get("renew_at")
        if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at):
            self.lease.renew(min(float(at), now))  # never from the future
            if msg.get("by") == "engine" and self.left and self.join_argv:
                log.warning("lease renewed by the engine: rejoining the membership")
                self._run_command(self.join_argv)
                self.left = False
            elif msg.get("by") == "engine":
                self.left = False
        self._check_lease(now)
        return self.state(now)

    def _check_lease(self, now: float) -> None:
        if not self.lease.lapsed(now):
            if self.self_fenced:
                log.warning("lease renewed: this host may run VMs again")
            self.self_fenced = False
            self.killed.clear()
            return
        if not self.self_fenced:
            log.error("lease lapsed (no renewal by the engine or the quorum for %g s): "
                      "killing this host's QEMUs", self.lease.lease_s)
            self.self_fenced = True
        for domain, pid in kill_qemus(self.qemu_pid_dir):
            if pid not in self.killed:  # a killed QEMU lingers a moment: killed again, quietly
                self.killed.add(pid)
                log.error("self-fence: killed QEMU %d of domain %s", pid, domain)
        if not self.left and not self._agent_alive(now):
            self.left = True
            if self.leave_argv:
                log.error("the agent is dead or hung: leaving the membership (%s)",
                          shlex.join(self.leave_argv))
                self._run_command(self.leave_argv)

    def _run_command(self, argv: list[str]) -> None:
        """Start ``argv`` without waiting (the loop keeps killing QEMUs); reaped later."""
        try:
            self.commands.append((shlex.join(argv), subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, start_new_session=True)))
        except OSError as exc:
            log.error("cannot run %s: %s", shlex.join(argv), exc)

    def _reap_commands(self) -> None:
        for item in list(self.commands):
            rc = item[1].poll()
            if rc is not None:
                self.commands.remove(item)
                if rc != 0:
                    log.error("%s exited with %d", item[0], rc)

    # -- the child -----------------------------------------------------------------------

    def _child_running(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def _agent_alive(self, now: float) -> bool:
        """Running, and heard from within a lease time: an agent that hangs renews nothing
        either, and left in the membership it would keep the engine from recovering."""
        silent_s = max(self.lease.lease_s, SILENT_MIN_S)
        return self._child_running() and now - self.heard_at < silent_s

    def _start_child(self, now: float) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = self.argv if self.starts == 0 else self.restart_argv
        env = {**os.environ, ENV_FD: str(theirs.fileno())}
        try:
            self.child = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env,
                                          stdin=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent)
        except OSError as exc:
            log.error("cannot start the agent (%s): %s", shlex.join(argv), exc)
            ours.close()
            self.child = None
            self.next_start = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
            return
        finally:
            theirs.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = ours
        self.sock.setblocking(False)
        self.starts += 1
        self.started_at = self.heard_at = now
        log.info("agent started (pid %d)", self.child.pid)

    def _watch_child(self, now: float) -> None:
        if self.child is not None:
            rc = self.child.poll()
            if rc is None:
                return
            if now - self.started_at >= BACKOFF_RESET_S:
                self.backoff = BACKOFF_FIRST_S
            log.error("agent (pid %d) exited with %d: restarting it in %g s",
                      self.child.pid, rc, self.backoff)
            self.child = None
            self.next_start = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
        if not self.stopping and now >= self.next_start:
            self._start_child(now)

    def _serve_socket(self, timeout: float) -> None:
        """Answer what the agent sent, waiting up to ``timeout`` for a first message."""
        sock = self.sock
        if sock is None:
            time.sleep(timeout)
            return
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                return
        for _ in range(MAX_MSGS_PER_TICK):
            try:
                data = sock.recv(MAX_MSG)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the child closed its end (it died): nothing more from it
                sock.close()
                self.sock = None
                return
            try:
                msg = json.loads(data)
                if not isinstance(msg, dict):
                    raise ValueError("not an object")
            except ValueError:
                log.warning("ignored a message that is not a JSON object")
                continue
            now = time.monotonic()
            self.heard_at = now
            answer = {"id": msg.get("id"), **self.handle(msg, now)}
            with contextlib.suppress(OSError):
                sock.send(json.dumps(answer).encode())

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        while not self.stopping:
            now = time.monotonic()
            self._watch_child(now)
            self._check_lease(now)
            self._reap_commands()
            self._serve_socket(self.tick_s)
        self._stop_child()
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping the agent, then the guard", signum)
        self.stopping = True

    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("agent (pid %d) still runs %g s after SIGTERM: SIGKILL",
                      child.pid, STOP_TIMEOUT_S)
            child.kill()
            child.wait(STOP_TIMEOUT_S)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral agent guard",
        description="Run the agent (AGENT-ARGV) under the host's lease guard: see "
                    "`corral agent guard --help` and docs/ha.md \"Host lease guard\".")
    p.add_argument("--leave-command", default="",
                   help="Takes the host out of the quorum membership when the lease lapsed "
                        "with the agent dead (e.g. \"corosync-cfgtool -H\")")
    p.add_argument("--join-command", default="",
                   help="Brings it back once the engine renews the lease again")
    p.add_argument("--restart-command", default="",
                   help="The agent's command line for restarts (default: AGENT-ARGV)")
    p.add_argument("--qemu-pid-dir", type=Path, default=QEMU_PID_DIR,
                   help="libvirt's QEMU pid files")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- AGENT-ARGV")
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    agent = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not agent:
        p.error("the agent's command line is missing: corral agent guard [options] -- "
                "corral agent run ...")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s guard %(levelname)s %(message)s")
    guard = Guard(agent, restart_argv=shlex.split(args.restart_command) or None,
                  leave_argv=shlex.split(args.leave_command) or None,
                  join_argv=shlex.split(args.join_command) or None,
                  qemu_pid_dir=args.qemu_pid_dir)
    sys.exit(guard.run())


if __name__ == "__main__":
    main()
