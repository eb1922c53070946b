"""The agent's side of its lease guard (corral.agent.guard): renew the host's lease, read it.

One request, one answer, over the socket the guard passed in ``CORRAL_GUARD_FD``; a guard
that does not answer within ``TIMEOUT_S`` gets None, so the agent never blocks long on it.
Requests carry an id: an answer that came too late for its request is dropped by the next.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time

from corral.agent_api.reports import LeaseState
from corral.errors import WrongState

ENV_FD = "CORRAL_GUARD_FD"
TIMEOUT_S = 0.5
MAX_MSG = 4096
REFUSED = ("this host's lease lapsed: it stopped its VMs itself; it starts none until the "
           "engine renews it")

_links: dict[int, GuardLink] = {}
_links_lock = threading.Lock()


class GuardLink:
    def __init__(self, sock: socket.socket, timeout_s: float = TIMEOUT_S) -> None:
        self._sock, self._timeout_s = sock, timeout_s
        self._lock = threading.Lock()
        self._next_id = 0

    @classmethod
    def from_env(cls) -> GuardLink | None:
        """This process's link (one per process), None when the agent runs without a guard."""
        raw = os.environ.get(ENV_FD, "")
        if not raw.isdigit():
            return None
        fd = int(raw)
        with _links_lock:
            if fd not in _links:
                try:
                    sock = socket.socket(fileno=fd)
                except OSError:
                    return None
                os.set_inheritable(fd, False)  # the agent's own children get none of it
                _links[fd] = cls(sock)
            return _links[fd]

    def renew(self, at: float, *, by: str, lease_s: float | None = None,
              armed: bool | None = None) -> LeaseState | None:
        """The lease renewed as of ``at`` (time.monotonic()) ``by`` "engine" or "quorum";
        ``lease_s``/``armed``: None keeps what the guard had. The state after it."""
        return self._ask({"renew_at": at, "by": by, "lease_s": lease_s, "armed": armed})

    def state(self) -> LeaseState | None:
        return self._ask({})

    def _ask(self, msg: dict[str, object]) -> LeaseState | None:
        with self._lock:
            self._next_id += 1
            want = self._next_id
            try:
                self._sock.send(json.dumps({"id": want, **msg}).encode())
            except OSError:
                return None
            deadline = time.monotonic() + self._timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    ready, _, _ = select.select([self._sock], [], [], left)
                    if not ready:
                        return None
                    data = self._sock.recv(MAX_MSG)
                except OSError:
                    return None
                if not data:
                    return None  # the guard is gone
                try:
                    answer = json.loads(data)
                except ValueError:
                    continue
                if isinstance(answer, dict) and answer.get("id") == want:
                    try:
                        return LeaseState(armed=answer["armed"], left_s=answer["left_s"],
                                          self_fenced=answer["self_fenced"])
                    except (KeyError, ValueError):
                        return None


def refuse_start_if_fenced(link: GuardLink | None) -> None:
    """WrongState (409) while the host's lease has lapsed: the guard killed its QEMUs, and
    the engine may already run them elsewhere. Without a guard, or one that does not answer,
    nothing is refused (the guard still kills what a lapsed lease must not run)."""
    if link is None:
        return
    state = link.state()
    if state is not None and state.self_fenced:
        raise WrongState(REFUSED)
