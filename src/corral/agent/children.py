"""The agent's one-shot children (qemu-img, rbd, cp, dpkg-deb, virt-customize...): they die
with the agent, and with the job that started them.

- **With the agent**: each child sets ``PR_SET_PDEATHSIG(SIGKILL)`` between fork and exec,
  so the kernel kills it when the agent dies, ``kill -9`` included; it then checks that the
  agent still lives (it may have died before the setting took) and exits if not. The signal
  fires when the *thread* that forked exits: every caller here waits for its child in the
  thread that started it (a job's worker thread, a route's), so the child never outlives
  that thread legitimately, and no long-lived spawning thread is needed.
- **With its job**: each child leads a process group of its own and is kept in a registry:
  the agent's, and that of the job running in the calling thread (:func:`scope`, entered
  by corral.agent.jobs). :meth:`Children.kill` SIGKILLs the groups (grandchildren too):
  when a job is cancelled or ends, and when the agent exits (SIGTERM: corral.agent.__main__).

Daemons the agent starts to outlive it (dnsmasq, through corral.agent.network._cmd, keeps
serving DHCP across agent restarts) are never started here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, overload

PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl(2), resolved once here: the child calls it between fork and exec."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no glibc/musl prctl: only the registry kills
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


_prctl = _load_prctl()


def _die_with(parent: int) -> Callable[[], None]:
    prctl = _prctl

    def setup() -> None:  # in the child, between fork and exec: no imports, no locks
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the agent died before PDEATHSIG was set
            os._exit(1)

    return setup


class Children:
    """Live children (of the agent, or of one job), each the leader of its process group."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen[Any]] = set()
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            self._procs = {p for p in self._procs if p.returncode is None}  # reaped: gone
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def pids(self) -> list[int]:
        return sorted(p.pid for p in list(self._procs) if p.returncode is None)

    def kill(self) -> list[int]:
        """SIGKILL the process group of every child not reaped yet (an unreaped leader keeps
        its pid, so the group id cannot name anyone else); the pids. Takes no lock: it also
        runs in the agent's SIGTERM handler."""
        killed = []
        for proc in list(self._procs):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
        return killed


_agent = Children()  # every child of the agent
_local = threading.local()  # .group: the Children of the job running in this thread


def live() -> list[int]:
    """Pids of the agent's children still running."""
    return _agent.pids()


def kill_all() -> list[int]:
    """Kill every child of the agent (it exits)."""
    return _agent.kill()


@contextlib.contextmanager
def scope(group: Children) -> Iterator[Children]:
    """Children started by this thread meanwhile also go into ``group``; any still running at
    the end are killed."""
    previous = getattr(_local, "group", None)
    _local.group = group
    try:
        yield group
    finally:
        _local.group = previous
        group.kill()


@overload
def popen(argv: Sequence[str], *, text: Literal[True], **kwargs: Any) -> subprocess.Popen[str]: ...
@overload
def popen(argv: Sequence[str], *, text: Literal[False] = False,
          **kwargs: Any) -> subprocess.Popen[bytes]: ...
def popen(argv: Sequence[str], *, text: bool = False, **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` of a child that dies with the agent and its job (module docstring)."""
    if not kwargs.get("start_new_session"):  # a new session leads its own group already
        kwargs["process_group"] = 0
    proc: subprocess.Popen[Any] = subprocess.Popen(argv, text=text,
                                                   preexec_fn=_die_with(os.getpid()), **kwargs)
    _agent.add(proc)
    group: Children | None = getattr(_local, "group", None)
    if group is not None:
        group.add(proc)
    return proc


@overload
def run(argv: Sequence[str], *, text: Literal[True], input: str | None = None,
        timeout: float | None = None, check: bool = False, capture_output: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess[str]: ...
@overload
def run(argv: Sequence[str], *, text: Literal[False] = False, input: bytes | None = None,
        timeout: float | None = None, check: bool = False, capture_output: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess[bytes]: ...
def run(argv: Sequence[str], *, text: bool = False, input: Any = None,
        timeout: float | None = None, check: bool = False, capture_output: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` through :func:`popen`; a child that times out (or whose caller is
    interrupted) is killed with its process group."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with popen(argv, text=text, **kwargs) as proc:  # type: ignore[call-overload]
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            _agent.discard(proc)
    rc = proc.returncode
    if check and rc:
        raise subprocess.CalledProcessError(rc, list(argv), out, err)
    return subprocess.CompletedProcess(list(argv), rc, out, err)
