"""When corral restarts an HA VM that stopped without being asked (``vms.restart_policy``):
a module of its own, with no pydantic, so the API models and the engine's HA share one enum."""

from __future__ import annotations

from enum import StrEnum


class RestartPolicy(StrEnum):
    """``always``: any stop not asked through corral (a crash, a guest that powered itself
    off, a domain destroyed behind corral's back) restarts it. ``on-failure``: a failure
    only (QEMU died or was killed, the guest panicked, its host rebooted under it): a guest
    that powers itself off stays off, as a user's shutdown from inside means it. Only HA VMs
    (``ha``) are restarted at all."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
