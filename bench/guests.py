"""Waiting for guests to boot; a wait that runs out names the guests that did not, with the
last lines of each one's serial console (the SDK's ``console_log``, as the tests read it)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

from corral.client import Client
from corral.images.tiny import BOOT_MARKER
from timing import BenchError

TAIL_LINES = 15
_NOT_TEXT = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")  # escapes, \r...


def console_tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a console log, terminal escapes removed."""
    kept = [ln.rstrip() for ln in _NOT_TEXT.sub("", text.replace("\r\n", "\n")).split("\n")]
    return "\n".join([ln for ln in kept if ln][-lines:])


def not_booted(what: str, timeout: float, pending: Iterable[str], total: int,
               console: Callable[[str], str], state: str = "not booted") -> BenchError:
    """The error of a wait for guests that ran out: its first line names the guests still
    pending (``state``); then the tail of each one's console (or why it could not be read)."""
    names = sorted(pending)
    parts = [f"timed out after {timeout:g} s waiting for {what}; {state} ({len(names)} of "
             f"{total}): {', '.join(names)}"]
    for name in names:
        try:
            tail = console_tail(console(name)) or "(empty)"
        except Exception as exc:  # the error being reported matters more than this one
            tail = f"(console log not readable: {type(exc).__name__}: {exc})"
        parts.append(f"--- {name}: last {TAIL_LINES} lines of its console ---\n{tail}")
    return BenchError("\n".join(parts))


def wait_booted(client: Client, names: Iterable[str], timeout: float, every: float = 2.0,
                what: str | None = None, marker: str = BOOT_MARKER) -> float:
    """Poll the console log of each VM in ``names`` until it shows ``marker`` (the tiny
    guest's boot line); seconds it took, or :func:`not_booted` after ``timeout``."""
    all_names = list(names)
    pending = set(all_names)
    what = what or (f"{len(all_names)} guests to boot" if len(all_names) != 1
                    else f"{all_names[0]} to print {marker}")
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        for name in sorted(pending):
            if marker in client.console_log(name):
                pending.discard(name)
        if not pending:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise not_booted(what, timeout, pending, len(all_names), client.console_log)
        time.sleep(every)
