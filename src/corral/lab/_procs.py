"""Process helpers of the lab: namespaces of a pid, killing a set of pids and waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable


def ns_id(pid: int | str, kind: str) -> str | None:
    """``net:[4026531840]``-style identity of a process's namespace; None if it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def pids_in_ns(kind: str, ident: str) -> list[int]:
    """Every process whose ``kind`` namespace is ``ident``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and ns_id(entry, kind) == ident:
            found.append(int(entry))
    return found


def kill_and_wait(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGKILL ``pids`` and wait until they are gone; returns those still alive."""
    pending = {p for p in pids if p > 1 and p != os.getpid()}
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        pending = {p for p in pending if is_alive(p)}
        if not pending or time.monotonic() >= deadline:
            return sorted(pending)
        time.sleep(0.02)
