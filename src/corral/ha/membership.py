"""Where each host stands in the quorate membership, as the engine derives it from what its
peers report (their quorum provider's view: corosync votequorum). Shared by the engine
(engine/ha_loop.py) and the simulator, so both follow one rule:

- a report counts only when it is quorate, younger than ``fresh``, and lists a strict
  majority of the cluster's hosts (``derive``'s ``seen`` has every host): corosync calls
  half or less quorate too under ``two_node`` (both halves of a two-host cluster) or
  ``last_man_standing``, and on such a view the engine would believe a host out whose own
  lease a quorum still renews;
- IN: a counting report lists the host;
- OUT: counting reports exist and none lists it — since the first derivation that saw
  it so (``out_since``; an engine that restarts counts again from its first round);
- UNKNOWN: no counting report at all (no quorum provider, nobody heard lately, or a
  two-host cluster: power fencing alone decides there).

A host's own report counts like any other: a quorate view that lists it is a majority's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corral.ha.model import Quorum


@dataclass(frozen=True)
class Seen:
    """A host's last membership report: when the engine got it, and what it said."""

    at: float
    quorate: bool
    members: frozenset[str]


@dataclass(frozen=True)
class Standing:
    quorum: Quorum = Quorum.UNKNOWN
    out_since: float = 0.0


def derive(now: float, fresh: float, seen: Mapping[str, Seen | None],
           before: Mapping[str, Standing]) -> dict[str, Standing]:
    """Each host of ``seen`` (every host, with its last report or None) → its standing now;
    ``before``: the last derivation's (for out_since)."""
    views = [s.members for s in seen.values()
             if s is not None and s.quorate and now - s.at < fresh
             and 2 * len(s.members & seen.keys()) > len(seen)]
    out: dict[str, Standing] = {}
    for name in seen:
        if not views:
            out[name] = Standing()
            continue
        if any(name in v for v in views):
            out[name] = Standing(Quorum.IN)
            continue
        was = before.get(name, Standing())
        out[name] = was if was.quorum is Quorum.OUT else Standing(Quorum.OUT, now)
    return out
