"""The states of a host (``hosts.status``); which action leads where is the engine's table
(corral.engine.services.host_states). A module of its own, with no pydantic: the pure
scheduler (corral.engine.scheduler) uses the same enum."""

from __future__ import annotations

from enum import StrEnum


class HostState(StrEnum):
    """``up``: takes new VMs. ``maintenance``: set by an admin, takes none, stays so whatever
    its agent does until `host activate`. ``unresponsive``: its agent has not answered for
    the grace. ``down``: known to be off (its fence device confirmed it: corral.engine.ha_loop)."""

    UP = "up"
    MAINTENANCE = "maintenance"
    UNRESPONSIVE = "unresponsive"
    DOWN = "down"
