"""A background loop of the engine (the balancer, HA): :meth:`Ticker.tick` every
``tick_s`` on a daemon thread, started with the engine and stopped at shutdown. A tick that
fails is logged and the next one runs: one bad round never stops the watching. Tests call
their rounds themselves instead of starting the thread."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Ticker:
    def __init__(self, name: str, tick_s: float) -> None:
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self.tick()
            except Exception:  # keep going whatever one round hit
                log.exception("%s: a round failed", self._thread.name)
