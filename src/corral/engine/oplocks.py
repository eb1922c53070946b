"""The lock table of the operation runner: declared locks, granted all at once, in order.

An operation names every lock it needs when it is submitted (``vm:a``, ``network:n``...).
It is granted all of them together or none, and only when it is first in the queue of each:
per lock, requests are served in submission order. Nothing waits while holding a lock (a
grant is atomic under one mutex), so there is no deadlock whatever order locks are declared
in; and since every request only waits for requests submitted before it (or holders, which
finish), nothing starves. Waiting happens here, in a table, never in a worker thread: an
operation goes to the thread pool once it holds its locks (no head-of-line blocking).

``try_hold`` is for the reconciler: take locks only if they are free *and* nothing queues
for them (it must never overtake an operation), else give up at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable


def normalize(names: Iterable[str]) -> list[str]:
    """Declared locks as the table keeps them: each once, in one fixed (sorted) order."""
    return sorted({n for n in names if n})


class LockTable:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._holder: dict[str, str] = {}  # lock name -> id of who holds it
        self._queue: dict[str, deque[str]] = {}  # lock name -> waiting ids, oldest first
        self._wanted: dict[str, list[str]] = {}  # waiting id -> its locks (submission order)
        self._held: dict[str, list[str]] = {}  # holding id -> its locks

    def request(self, who: str, names: Iterable[str]) -> list[str]:
        """Queue ``who`` for its locks; the ids granted by this call (``who`` among them
        when its locks were free)."""
        locks = normalize(names)
        with self._mutex:
            if who in self._wanted or who in self._held:
                raise ValueError(f"{who} already asked for its locks")
            self._wanted[who] = locks
            for name in locks:
                self._queue.setdefault(name, deque()).append(who)
            return self._grant()

    def release(self, who: str) -> list[str]:
        """Give back what ``who`` holds; the ids that this grants."""
        with self._mutex:
            for name in self._held.pop(who, []):
                del self._holder[name]
            return self._grant()

    def withdraw(self, who: str) -> tuple[bool, list[str]]:
        """Take a waiting request out of the queues: (whether it was waiting, ids granted
        now that it no longer stands in front of them)."""
        with self._mutex:
            locks = self._wanted.pop(who, None)
            if locks is None:
                return False, []
            for name in locks:
                self._queue[name].remove(who)
                if not self._queue[name]:
                    del self._queue[name]
            return True, self._grant()

    def try_hold(self, who: str, names: Iterable[str]) -> bool:
        """Hold the locks at once if none is held or queued for; never waits."""
        locks = normalize(names)
        with self._mutex:
            if who in self._held or any(n in self._holder or n in self._queue for n in locks):
                return False
            self._take(who, locks)
            return True

    def waiting(self, who: str) -> bool:
        with self._mutex:
            return who in self._wanted

    def holding(self, who: str) -> list[str]:
        with self._mutex:
            return list(self._held.get(who, []))

    def _take(self, who: str, locks: list[str]) -> None:
        for name in locks:
            self._holder[name] = who
        self._held[who] = locks

    def _grant(self) -> list[str]:
        # One pass in submission order suffices: a grant only takes locks, so it cannot
        # make a request further back grantable.
        granted = []
        for who, locks in list(self._wanted.items()):
            if all(n not in self._holder and self._queue[n][0] == who for n in locks):
                for name in locks:
                    self._queue[name].popleft()
                    if not self._queue[name]:
                        del self._queue[name]
                del self._wanted[who]
                self._take(who, locks)
                granted.append(who)
        return granted
