"""Run a shell command in a guest through its serial console, for tests and benchmarks.

The tiny guest keeps a root shell on its serial console. The command is typed through the
engine's console WebSocket (as ``corral vm console`` does) and its output and exit status
are read back from the same stream, between markers that only the command's output (not
the echo of the typed line) can produce.

Every step is bounded: the websockets sync client can stay blocked for minutes when an
opening handshake gets no answer (its reader thread sits in a TLS read that nothing
wakes), so we open the TCP socket ourselves and a watchdog shuts it down at the deadline.
A console whose opening handshake gets no answer is tried again once, with a warning, so
that the test run shows it happened.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect

OPEN_TIMEOUT = 10.0
OPEN_TRIES = 2


@dataclass(frozen=True)
class ConsoleAnswer:
    status: int  # the command's exit status
    output: str  # its stdout, whitespace collapsed to single spaces (the shell's word split)


class ConsoleTimeout(AssertionError):
    """The guest did not answer in time (an AssertionError: tests report it as a failure)."""


def console_run(url: str, token: str, ca: str, vm: str, command: str,
                timeout: float = 30) -> ConsoleAnswer:
    """Type ``command`` on VM's serial console through the engine at ``url`` (https://...)."""
    tag = uuid.uuid4().hex[:8]
    # The markers are split in the typed line ('' joins nothing in the shell), so only the
    # echo's output contains them whole.
    line = (f"__o=$({command}); __s=$?; echo C{tag}''BEGIN $__o C{tag}''END $__s C{tag}''DONE\n")
    found = re.compile(rf"C{tag}BEGIN (.*?) ?C{tag}END (\d+) C{tag}DONE", re.S)
    deadline = time.monotonic() + timeout
    for attempt in range(1, OPEN_TRIES + 1):
        try:
            return _session(url, token, ca, vm, line, found, deadline, command)
        except _NotOpened as exc:
            if attempt == OPEN_TRIES or time.monotonic() >= deadline:
                raise ConsoleTimeout(f"the console of {vm} did not open: {exc}") from exc
            warnings.warn(f"the console of {vm} did not open ({exc}); trying again",
                          stacklevel=2)
    raise AssertionError("unreachable")


class _NotOpened(Exception):
    pass


def _session(url: str, token: str, ca: str, vm: str, line: str, found: re.Pattern[str],
             deadline: float, command: str) -> ConsoleAnswer:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    sock = socket.create_connection((host, port), timeout=OPEN_TIMEOUT)
    spare = os.dup(sock.fileno())  # for the watchdog: valid until we close it
    ctx = ssl.create_default_context(cafile=ca)
    seen = ""
    try:
        with _watchdog(spare, OPEN_TIMEOUT + 5):
            try:
                ws = connect(f"wss://{parts.netloc}/api/v1/vms/{vm}/console", sock=sock,
                             ssl=ctx, server_hostname=host, open_timeout=OPEN_TIMEOUT,
                             additional_headers={"Authorization": f"Bearer {token}"},
                             close_timeout=5)
            except (TimeoutError, OSError, InvalidHandshake) as exc:
                raise _NotOpened(str(exc) or type(exc).__name__) from exc
        with _watchdog(spare, max(0.0, deadline - time.monotonic()) + 10), ws:
            ws.send(b"\n" + line.encode())
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = ws.recv(timeout=left)
                except TimeoutError:
                    break
                seen += msg.decode(errors="replace") if isinstance(msg, bytes) else msg
                m = found.search(seen)
                if m:
                    return ConsoleAnswer(int(m.group(2)), m.group(1).strip())
    finally:
        os.close(spare)
    raise ConsoleTimeout(f"no answer from the guest of {vm} to {command!r}: {seen[-400:]!r}")


@contextmanager
def _watchdog(fd: int, seconds: float) -> Iterator[None]:
    """Shut the socket down (waking every thread blocked on it) if the block outlives
    ``seconds``; ``fd`` is a duplicate of the socket's, so it stays valid meanwhile."""
    timer = threading.Timer(seconds, _shut, args=(fd,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _shut(fd: int) -> None:
    s = socket.socket(fileno=fd)
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.detach()
