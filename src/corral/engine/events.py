"""In-process event bus: operations and the reconciler publish, SSE subscribers receive.

Publishers run in worker threads; subscribers are asyncio queues, fed thread-safely.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from corral.api import Event
from corral.engine.db.models import utcnow
from corral.engine.projects import project_of

_QUEUE_MAX = 1000


class EventBus:
    def __init__(self, history: int = 200) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = []
        self.recent: deque[Event] = deque(maxlen=history)

    def publish(self, type_: str, data: dict[str, Any]) -> None:
        event = Event(type=type_, time=utcnow(), data=data, project=_project(type_, data))
        with self._lock:
            self.recent.append(event)
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, event)
            except RuntimeError:  # loop closed: the subscriber is gone
                self.unsubscribe(queue)

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=_QUEUE_MAX)
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        with self._lock:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]


def _project(type_: str, data: dict[str, Any]) -> str | None:
    """Whose event it is: a VM's project (from its full name), an operation's."""
    if type_ == "vm" and isinstance(data.get("name"), str):
        return project_of(data["name"])
    project = data.get("project")
    return project if isinstance(project, str) else None


def _offer(queue: asyncio.Queue[Event], event: Event) -> None:
    # A slow subscriber loses its oldest events rather than stalling the engine.
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)
