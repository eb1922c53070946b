"""API types of a host's evacuation (``corral host maintenance``,
``POST /api/v1/hosts/{name}/maintenance``, ``?explain=true``: the plan)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from corral.api.evacuation_mode import EvacuationMode
from corral.api.models import _Request

__all__ = ["EvacuationAction", "EvacuationMode", "EvacuationPlan", "EvacuationStep",
           "HostMaintenance"]


class HostMaintenance(_Request):
    """Empty the host, then keep new VMs off it until ``activate``."""

    force: bool = Field(False, description="Go ahead when some VMs cannot move: they stay "
                        "on the host (those of evacuation mode stop are stopped) and are "
                        "listed; without it the whole maintenance is refused (409) before "
                        "anything moves")


class EvacuationAction(StrEnum):
    LIVE = "live"  # live migration
    OFFLINE = "offline"  # a stopped VM's definition (and disk) moves
    COLD = "cold"  # auto mode, no live move possible: stop, move offline, start there
    STOP = "stop"  # stop mode: stopped, stays on the host
    STAY = "stay"  # stop mode, already stopped: nothing to do
    BLOCKED = "blocked"  # cannot move: ``reason`` says why


class EvacuationStep(BaseModel):
    vm: str = Field(description="The VM's full name")
    state: str = Field(description="Its state now")
    mode: EvacuationMode
    action: EvacuationAction
    target: str | None = Field(None, description="The host it goes to")
    copy_storage: bool = Field(False, description="Its root disk is in the host's own storage: "
                               "copied to the target during the move")
    reason: str | None = Field(None, description="Why it cannot move (action blocked)")


class EvacuationPlan(BaseModel):
    """What ``host maintenance`` would do now: each VM's move, in the order they go."""

    host: str
    steps: list[EvacuationStep]
    blocked: list[str] = Field([], description="VMs that cannot move: without force the "
                               "maintenance is refused")
    text: list[str] = Field([], description="The plan, one line per VM")
