"""API types of storage: pools, volumes and the disks of VMs (volumes attached to them)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator, model_validator

from corral.api.models import Name, _name_field, _Request, _size
from corral.errors import InvalidInput
from corral.validation import parse_size, validate_name

PATH_MAX = 1024
MIB = 1 << 20
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CEPH_POOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class PoolType(StrEnum):
    """dir: a directory of one host; shared: a directory every host sees at the same path
    (NFS in production), so VMs on it live-migrate without copying; rbd: a Ceph RBD pool,
    replicated by Ceph, that every host reaches over the network."""

    DIR = "dir"
    SHARED = "shared"
    RBD = "rbd"


class VolumeFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"


class DiskBus(StrEnum):
    VIRTIO = "virtio"
    SCSI = "scsi"
    SATA = "sata"


def check_host_path(value: str, field: str) -> str:
    """An absolute, normalized path on a host: no '..', '.', '//' or control characters."""
    if not value.startswith("/"):
        raise ValueError(f"{field} must be an absolute path")
    if len(value) > PATH_MAX:
        raise ValueError(f"{field} is longer than {PATH_MAX} characters")
    if _CONTROL_RE.search(value):
        raise ValueError(f"{field} must not contain control characters")
    parts = value.rstrip("/").split("/")[1:]
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{field} {value!r} must be a normalized path below / "
                         "(no '..', '.' or empty parts)")
    return value.rstrip("/")


class PoolCreate(_Request):
    name: Name
    type: PoolType = PoolType.DIR
    path: str | None = Field(None, description="dir: default DATA/agent/storage/pools/NAME; "
                             "shared: the mount point every host has (required)")
    ceph_conf: str | None = Field(None, description="rbd: ceph.conf on the hosts "
                                  "(default /etc/ceph/ceph.conf)")
    ceph_pool: str | None = Field(None, description="rbd: the Ceph pool holding the images")

    _name = _name_field("name")

    @field_validator("ceph_pool")
    @classmethod
    def _ceph_pool(cls, v: str | None) -> str | None:
        if v is not None and not _CEPH_POOL_RE.fullmatch(v):
            raise ValueError(f"ceph_pool {v!r} must be 1-63 ASCII letters, digits, '_', '.' "
                             "or '-', starting with a letter or digit")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return None if v is None else check_host_path(v, "path")

    @field_validator("ceph_conf")
    @classmethod
    def _conf(cls, v: str | None) -> str | None:
        return None if v is None else check_host_path(v, "ceph_conf")

    @model_validator(mode="after")
    def _by_type(self) -> PoolCreate:
        if self.type == PoolType.RBD:
            if self.path is not None:
                raise ValueError("path is for dir and shared pools; an rbd pool has "
                                 "ceph_conf and ceph_pool")
            if self.ceph_pool is None:
                raise ValueError("an rbd pool needs ceph_pool (the Ceph pool of its images)")
        else:
            if self.ceph_conf is not None or self.ceph_pool is not None:
                raise ValueError(f"ceph_conf and ceph_pool are for rbd pools, not {self.type}")
            if self.type == PoolType.SHARED and self.path is None:
                raise ValueError("a shared pool needs the path every host mounts it at")
        return self


class Pool(BaseModel):
    name: str
    type: PoolType
    status: str
    path: str | None = None
    ceph_conf: str | None = None
    ceph_pool: str | None = None
    host: str | None = Field(None, description="dir pools: the host holding the directory")
    capacity: int | None = Field(None, description="bytes; None when no host answered")
    allocation: int | None = None
    available: int | None = None
    volumes: int = 0
    created_at: datetime


class VolumeCreate(_Request):
    name: Name
    size: str | int = Field(description="e.g. 10G; a number alone is in GiB; rounded up to MiB")
    format: VolumeFormat | None = Field(None, description="default: qcow2 in dir and shared "
                                        "pools, raw in rbd pools (RBD images are raw)")

    _name = _name_field("name")

    @field_validator("size")
    @classmethod
    def _size_ok(cls, v: str | int) -> str | int:
        _size(v, "size", "G")
        return v

    @property
    def size_bytes(self) -> int:
        return round_size(parse_size(self.size, "size", "G"))


class VolumeResize(_Request):
    size: str | int = Field(description="The new size (volumes only grow), e.g. 20G")

    @field_validator("size")
    @classmethod
    def _size_ok(cls, v: str | int) -> str | int:
        _size(v, "size", "G")
        return v

    @property
    def size_bytes(self) -> int:
        return round_size(parse_size(self.size, "size", "G"))


def round_size(size: int) -> int:
    """Volume sizes are whole MiB (QEMU and RBD want multiples of 512 bytes at least)."""
    return -(-size // MIB) * MIB


class Volume(BaseModel):
    pool: str
    name: str
    project: str = Field("default", description="The project it belongs to")
    format: VolumeFormat
    size: int = Field(description="virtual size in bytes")
    allocation: int | None = Field(None, description="bytes written (thin provisioning)")
    status: str
    source: str = Field(description="file path, or POOL/IMAGE of an RBD image")
    vm: str | None = None
    bus: DiskBus | None = None
    target: str | None = None
    created_at: datetime


class DiskAttach(_Request):
    volume: str = Field(description="POOL/NAME")
    bus: DiskBus = DiskBus.VIRTIO

    @field_validator("volume")
    @classmethod
    def _volume(cls, v: str) -> str:
        split_volume(v)
        return v

    @property
    def pool(self) -> str:
        return split_volume(self.volume)[0]

    @property
    def name(self) -> str:
        return split_volume(self.volume)[1]


def split_volume(ref: str) -> tuple[str, str]:
    """``POOL/NAME`` -> (pool, name), both valid names, else ValueError."""
    pool, sep, name = ref.partition("/")
    if not sep:
        raise ValueError(f"volume {ref!r} must be POOL/NAME")
    try:
        return validate_name(pool, "pool"), validate_name(name, "volume")
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class VmDisk(BaseModel):
    """A disk of a VM: its root disk, its cloud-init seed, or an attached volume."""

    target: str
    bus: str
    kind: str = Field(description="root | seed | volume")
    volume: str | None = Field(None, description="POOL/NAME of an attached volume")
    format: str
    size: int | None = None
    source: str
