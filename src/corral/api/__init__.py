"""Request and response types shared by the engine, the SDK and the CLI."""

from corral.api.models import (
    Event,
    Host,
    Image,
    ImageBuildTiny,
    ImageImport,
    Network,
    Operation,
    OperationStatus,
    PowerAction,
    Status,
    Vm,
    VmCreate,
    VmState,
    VmStatePut,
)

__all__ = [
    "Event",
    "Host",
    "Image",
    "ImageBuildTiny",
    "ImageImport",
    "Network",
    "Operation",
    "OperationStatus",
    "PowerAction",
    "Status",
    "Vm",
    "VmCreate",
    "VmState",
    "VmStatePut",
]
