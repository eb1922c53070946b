"""Which action moves a host from which state to which (Firecracker's lesson: the valid
actions of each state are explicit; anything else is a clear 409, never a silent no-op).

Admin actions (`host maintenance`, `host activate`) and what the engine observes (its agent
answered, or stayed silent for the grace) go through the same table. A host in maintenance
stays there whatever its agent does: only `host activate` takes it out, so the reconciler
never hands it back to the scheduler behind the admin's back, and a host being worked on is
never taken for a lost one.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.orm import Session

from corral.api import HostState
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host
from corral.errors import Conflict, NotFound, WrongState


class HostAction(StrEnum):
    MAINTENANCE = "maintenance"  # admin: take no new VMs (issue 14 evacuates them)
    ACTIVATE = "activate"  # admin: back to work
    ANSWERED = "answered"  # engine: its agent answered
    LOST = "lost"  # engine: no answer for the grace
    FENCED = "fenced"  # engine (HA): power off confirmed, or its lease lapsed out of quorum


UP, MAINT, UNRESP, DOWN = (HostState.UP, HostState.MAINTENANCE, HostState.UNRESPONSIVE,
                           HostState.DOWN)

TRANSITIONS: dict[tuple[HostState, HostAction], HostState] = {
    (UP, HostAction.MAINTENANCE): MAINT,
    (UNRESP, HostAction.MAINTENANCE): MAINT,  # an admin may take a lost host out of use
    (DOWN, HostAction.MAINTENANCE): MAINT,
    (MAINT, HostAction.ACTIVATE): UP,
    (UP, HostAction.ANSWERED): UP,
    (UNRESP, HostAction.ANSWERED): UP,
    (DOWN, HostAction.ANSWERED): UP,
    (MAINT, HostAction.ANSWERED): MAINT,
    (UP, HostAction.LOST): UNRESP,
    (UNRESP, HostAction.LOST): UNRESP,
    (DOWN, HostAction.LOST): DOWN,
    (MAINT, HostAction.LOST): MAINT,
    (UP, HostAction.FENCED): DOWN,
    (UNRESP, HostAction.FENCED): DOWN,
    (DOWN, HostAction.FENCED): DOWN,
}

# `host remove --force` (its VMs become `unknown`): only for a host that is not up. One in
# maintenance still runs its VMs: evacuate them (issue 14) or delete them first.
FORCE_REMOVABLE = frozenset({UNRESP, DOWN})

_CAS_TRIES = 3  # each lost race means another writer changed the state: re-read, re-decide


def allowed_from(action: HostAction) -> list[HostState]:
    return [state for state, act in TRANSITIONS if act is action]


def target(name: str, state: str, action: HostAction) -> HostState:
    """Where ``action`` takes a host in ``state``; WrongState (409) naming the state and
    the states the action is allowed from."""
    current = HostState(state)
    after = TRANSITIONS.get((current, action))
    if after is None:
        allowed = ", ".join(allowed_from(action))
        raise WrongState(f"host {name} is {current}: cannot {action} it (allowed from: "
                         f"{allowed})", field="status", state=current.value,
                         allowed=[s.value for s in allowed_from(action)])
    return after


def apply(s: Session, host_id: str, action: HostAction) -> tuple[HostState, HostState]:
    """Move the host by ``action`` as a compare-and-swap on its state: (before, after).
    A concurrent change between read and write is seen, and decided again from the new
    state (a few times at most, then a 409)."""
    for _ in range(_CAS_TRIES):
        host = s.get(Host, host_id)
        if host is None:
            raise NotFound(f"host {host_id} not found (`corral host list`)", field="name")
        before = HostState(host.status)
        after = target(host.name, before, action)
        if after is before or claims.claim(s, Host, host_id, {"status": before.value},
                                           {"status": after.value}):
            return before, after
    raise Conflict(f"host {host_id}: its state keeps changing; try again", field="status")


def move(ctx: EngineContext, host_id: str, action: HostAction, reason: str) -> HostState:
    """:func:`apply` in a unit of work of its own; a change of state is published as a
    ``host`` event with ``reason``. The state after it."""
    with ctx.db.session() as s:
        before, after = apply(s, host_id, action)
        host = s.get(Host, host_id)
        name = host.name if host else host_id
    if before is not after:
        ctx.bus.publish("host", {"name": name, "status": after.value, "reason": reason})
    return after
