"""Failed logins, per user name and per client address: after a few, each next attempt must
wait longer (1 s, 2 s, 4 s ... 60 s), and after many the key is locked for a while. In memory:
an engine restart forgets, which is fine for slowing down guessing.

The admin logging in from the host's own console (loopback) is never held back: whoever
locks the admin out from the network cannot lock the machine's owner out of their engine.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from corral.engine.context import EngineContext
from corral.engine.services.users import ADMIN
from corral.errors import RateLimited

FREE_FAILURES = 3  # failures allowed before any delay
LOCK_AFTER = 10  # failures that lock the key
LOCK_S = 15 * 60.0
MAX_DELAY_S = 60.0
MAX_RECORDS = 10_000  # names and addresses tracked at once: a spray of names is bounded
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0


class LoginGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}

    @staticmethod
    def exempt(user: str, address: str | None) -> bool:
        return user == ADMIN and address in _LOOPBACK

    @staticmethod
    def _keys(user: str, address: str | None) -> list[str]:
        return [f"user:{user}"] + ([f"addr:{address}"] if address else [])

    def wait_s(self, failures: int) -> float:
        """How long after the last failure the next attempt must come."""
        if failures >= LOCK_AFTER:
            return LOCK_S
        if failures < FREE_FAILURES:
            return 0.0
        return min(2.0 ** (failures - FREE_FAILURES), MAX_DELAY_S)

    def attempt(self, user: str, address: str | None) -> None:
        """A login attempt begins: RateLimited when the user or the address must still wait
        (before the password is even looked at: a guess during a lock tells nothing). Else
        it counts as a failure until ``succeeded`` says otherwise, so that guesses sent all
        at once are held back as if sent one after another."""
        if self.exempt(user, address):
            return
        now = self.clock()
        keys = self._keys(user, address)
        with self._lock:
            for key in keys:
                rec = self._records.get(key)
                if rec is None:
                    continue
                left = rec.last + self.wait_s(rec.failures) - now
                if left > 0:
                    what = "locked" if rec.failures >= LOCK_AFTER else "held back"
                    raise RateLimited(
                        f"too many failed logins: {what}; try again in {int(left) + 1} s",
                        retry_after_s=int(left) + 1)
                if rec.failures >= LOCK_AFTER:  # the lock ran out: start over
                    del self._records[key]
            for key in keys:
                rec = self._records.setdefault(key, _Record())
                rec.failures += 1
                rec.last = now
            if len(self._records) > MAX_RECORDS:
                self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget the records that hold nothing back any more, then, if still too many, the
        oldest (a lock lost that way only lets one more guess through per delay)."""
        for key in [k for k, r in self._records.items() if now - r.last > LOCK_S]:
            del self._records[key]
        if len(self._records) > MAX_RECORDS:
            oldest = sorted(self._records, key=lambda k: self._records[k].last)
            for key in oldest[:len(oldest) - MAX_RECORDS]:
                del self._records[key]

    def succeeded(self, user: str, address: str | None) -> None:
        with self._lock:
            for key in self._keys(user, address):
                self._records.pop(key, None)


# By the context's id (a dataclass is not hashable), dropped with the context.
_GUARDS: dict[int, LoginGuard] = {}
_GUARDS_LOCK = threading.Lock()


def guard_of(ctx: EngineContext) -> LoginGuard:
    """The engine's guard (one per engine context, so that tests' engines do not share)."""
    with _GUARDS_LOCK:
        guard = _GUARDS.get(id(ctx))
        if guard is None:
            guard = _GUARDS[id(ctx)] = LoginGuard()
            weakref.finalize(ctx, _GUARDS.pop, id(ctx), None)
        return guard
