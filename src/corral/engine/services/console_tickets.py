"""Console tickets: what a browser's WebSocket, which cannot send an Authorization header,
opens a VM's console with. A ticket is random, names one VM, lives ``TTL_S`` seconds and
opens one connection: unlike the API token, one that ends up in a URL or a log is worth
nothing a moment later (Proxmox's VNC tickets, OpenStack's console tokens). It also names the
console it opens (``serial`` or ``vnc``): a serial ticket does not open the display."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Literal

from corral.errors import Unauthorized

Kind = Literal["serial", "vnc"]
KINDS: tuple[Kind, ...] = ("serial", "vnc")
TTL_S = 30.0
_MAX = 1000  # tickets held at once; the oldest go first (bounded memory)

_lock = threading.Lock()
_tickets: dict[str, tuple[str, Kind, float]] = {}  # ticket -> (VM, console, monotonic expiry)


def issue(vm: str, kind: Kind = "serial") -> str:
    ticket = "ct_" + secrets.token_urlsafe(24)
    now = time.monotonic()
    with _lock:
        for old in [t for t, (_vm, _kind, until) in _tickets.items() if until <= now]:
            del _tickets[old]
        while len(_tickets) >= _MAX:
            del _tickets[next(iter(_tickets))]
        _tickets[ticket] = (vm, kind, now + TTL_S)
    return ticket


def redeem(ticket: str, vm: str, kind: Kind = "serial") -> None:
    """Use ``ticket`` up for ``vm``'s console ``kind``, or Unauthorized (spent even then)."""
    with _lock:
        held = _tickets.pop(ticket, None)
    if held is None or held[2] <= time.monotonic():
        raise Unauthorized("invalid or expired console ticket (POST .../console-ticket)")
    if held[0] != vm:
        raise Unauthorized(f"this console ticket is for VM {held[0]}, not {vm}")
    if held[1] != kind:
        raise Unauthorized(f"this ticket opens the {held[1]} console, not the {kind} one")
