"""Pydantic types of the REST API (request types are named resource + verb, as in Incus)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.errors import InvalidInput
from corral.validation import parse_size, validate_name


def _name_field(field: str) -> Any:
    """A pydantic validator for a resource name (InvalidInput becomes a field error)."""

    def check(value: object) -> str:
        try:
            return validate_name(value, field)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    return field_validator(field)(check)


def _size(value: object, field: str, unit: str) -> int:
    try:
        return parse_size(value, field, unit)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VmState(StrEnum):
    """What a VM is doing; ``creating`` and ``deleting`` are set by the engine."""

    CREATING = "creating"
    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    CRASHED = "crashed"
    DELETING = "deleting"
    UNKNOWN = "unknown"
    ERROR = "error"


class PowerAction(StrEnum):
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    PAUSE = "pause"
    RESUME = "resume"


class OperationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"

    @property
    def done(self) -> bool:
        return self in (OperationStatus.SUCCESS, OperationStatus.FAILURE)


class VmCreate(_Request):
    name: str
    image: str
    cpus: int = Field(1, ge=1, le=64)
    memory: str | int = "512M"
    disk: str | int | None = Field(None, description="Root disk size (grows the image); default: image size")
    network: str = "default"
    start: bool = False

    _name = _name_field("name")
    _image = _name_field("image")
    _network = _name_field("network")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int) -> str | int:
        if _size(v, "memory", "M") < 16 << 20:
            raise ValueError("memory must be at least 16M")
        return v

    @field_validator("disk")
    @classmethod
    def _disk(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            _size(v, "disk", "G")
        return v

    @property
    def memory_mib(self) -> int:
        return parse_size(self.memory, "memory", "M") >> 20

    @property
    def disk_bytes(self) -> int | None:
        return None if self.disk is None else parse_size(self.disk, "disk", "G")


class VmStatePut(_Request):
    action: PowerAction
    force: bool = False
    timeout: int = Field(60, ge=0, le=3600, description="Seconds of graceful shutdown before forcing")


class Vm(BaseModel):
    id: str
    name: str
    image: str
    cpus: int
    memory_mib: int
    disk_bytes: int
    network: str | None
    mac: str | None
    host: str | None
    state: VmState
    desired_power: str
    created_at: datetime


class ImageImport(_Request):
    name: str
    source: str = Field(description="Path of a qcow2 or raw image file on the engine's host")
    format: str = Field("auto", pattern="^(auto|qcow2|raw)$")

    _name = _name_field("name")


class ImageBuildTiny(_Request):
    name: str = "tiny"

    _name = _name_field("name")


class Image(BaseModel):
    id: str
    name: str
    format: str
    virtual_size: int
    file_size: int
    kernel: bool
    status: str
    created_at: datetime


class Network(BaseModel):
    name: str
    bridge: str
    subnet: str
    gateway: str
    dhcp_start: str
    dhcp_end: str
    nat: bool


class Host(BaseModel):
    name: str
    url: str
    status: str
    virt_type: str | None
    virt_note: str | None
    cpus: int | None
    memory_mib: int | None
    last_seen: datetime | None


class Operation(BaseModel):
    id: str
    type: str
    status: OperationStatus
    progress: int
    message: str | None
    resources: dict[str, list[str]]
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class Event(BaseModel):
    type: str
    time: datetime
    data: dict[str, Any]


class Status(BaseModel):
    version: str
    hosts: list[Host]
    vms: int
    running_vms: int
    images: int
    data_dir: str
