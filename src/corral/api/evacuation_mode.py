"""What `corral host maintenance` does with a VM (``vms.evacuation``): a module of its own,
with no pydantic, so the VM models and the evacuation's own types share one enum."""

from __future__ import annotations

from enum import StrEnum


class EvacuationMode(StrEnum):
    """Incus's ``cluster.evacuate``. ``auto``: live migration if it can, else stopped, moved
    and started on the target. ``migrate``: live migration only (a VM that cannot move live
    holds the maintenance up). ``stop``: stopped and left on its host (a VM that is only
    useful where it is, or that is cheap to restart). Stopped VMs of ``auto`` and
    ``migrate`` have their definition moved."""

    AUTO = "auto"
    MIGRATE = "migrate"
    STOP = "stop"
