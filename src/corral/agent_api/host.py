"""The host's memory as a whole (``/v1/host/memory``, ``/v1/host/ksm``): KSM and balloons."""

from __future__ import annotations

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
