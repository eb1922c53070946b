"""The host as a whole: its memory (``/v1/host/memory``, ``/v1/host/ksm``: KSM and balloons)
and its power (``/v1/host/power``: reboot, power off)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corral.agent_api import Answer, Body


class KsmBody(Body):
    """``PUT /v1/host/ksm``: kernel same-page merging on (scan and merge) or off (the merged
    pages are split again)."""

    on: bool


class HostMemory(Answer):
    """``GET /v1/host/memory``: what the host's memory does now."""

    total_mib: int
    available_mib: int  # MemAvailable
    ksm: bool | None  # None: the kernel offers no KSM
    ksm_saved_mib: int = 0  # memory KSM's merging spares (pages_sharing)
    vms_booted_mib: int = 0  # memory the running domains were started with
    vms_balloon_mib: int = 0  # what their balloons leave their guests


class PowerBody(Body):
    """``POST /v1/host/power``: reboot or power off this machine (`corral host reboot|shutdown`,
    after the engine emptied it)."""

    action: Literal["reboot", "poweroff"]


class PowerAnswer(Answer):
    """The agent's run: ``start_id`` changes each time the agent starts, so the engine sees
    a host that rebooted come back; ``command`` what was run (or is about to be)."""

    start_id: str
    command: list[str] = Field(default_factory=list)
