"""How often an HA VM that keeps going down on a healthy host is restarted in place.

A VM that crashes is started again where it is, at most ``max_restarts`` times within any
``window_s`` seconds; one more stop in the window and it stays down, with the reason (a
guest that crashes at every boot would otherwise loop forever and hide the fault). Pure:
the caller keeps the history (``vms.ha_restarts``: wall-clock seconds, so that it outlives
an engine restart) and passes ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MAX_RESTARTS = 3
DEFAULT_WINDOW_S = 600.0


@dataclass(frozen=True)
class Verdict:
    """``allowed``: restart it now. ``history``: what to keep (restarts still in the window,
    ``now`` added when allowed). ``reason``: why not, in words (empty when allowed)."""

    allowed: bool
    history: tuple[float, ...]
    reason: str = ""


@dataclass(frozen=True)
class RestartBudget:
    max_restarts: int = DEFAULT_MAX_RESTARTS
    window_s: float = DEFAULT_WINDOW_S

    def recent(self, history: Sequence[float], now: float) -> tuple[float, ...]:
        """The restarts that still count at ``now``. One dated after ``now`` (the wall clock
        went back) is dropped: at worst a VM gets a restart more, never stays down for it."""
        return tuple(sorted(t for t in history if 0 <= now - t < self.window_s))

    def check(self, history: Sequence[float], now: float) -> Verdict:
        kept = self.recent(history, now)
        if len(kept) < self.max_restarts:
            return Verdict(True, (*kept, now))
        if self.max_restarts == 0:
            return Verdict(False, kept, "restart in place is off (ha.restart_max 0)")
        return Verdict(False, kept,
                       f"it went down {len(kept) + 1} times within {self.window_s:g} s and "
                       f"was restarted in place {len(kept)} times (ha.restart_max "
                       f"{self.max_restarts}, ha.restart_window_s {self.window_s:g}): left "
                       "stopped; start it (`corral vm start`) once its fault is fixed")
