"""Storage pools, their volumes, VM root disks in pools, and the disks of domains:
``/v1/pools``, ``/v1/pools/{pool}/roots`` and ``/v1/domains/{name}/disks``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corral.agent_api import Answer, Body, Deleted

PoolKind = Literal["dir", "shared", "rbd"]
VolumeFormat = Literal["qcow2", "raw"]
# Shared pools: the first host writes the marker file, every other host must read it back
# (proof that they really share the directory).
Marker = Literal["write", "verify"]


# -- pools -------------------------------------------------------------------------------------

class PoolBody(Body):
    """``PUT /v1/pools/{name}`` (set up and remember) and ``POST .../check`` (dry run)."""

    type: PoolKind
    id: str = ""  # the engine's id of the pool: written in a shared pool's marker file
    path: str | None = None  # dir, shared
    ceph_conf: str | None = None  # rbd
    ceph_pool: str | None = None  # rbd
    marker: Marker = "write"


class PoolStats(Answer):
    """``GET /v1/pools/{name}``; the drivers build it too (corral.agent.pools.base)."""

    capacity: int  # bytes
    allocation: int  # bytes in use
    available: int  # bytes a new volume may still take


class PoolSetup(PoolStats):
    """``PUT /v1/pools/{name}``: the stats, and what the engine keeps of the driver."""

    monitors: list[tuple[str, int]] | None = None  # rbd: (address, port) of Ceph's monitors


# -- volumes -----------------------------------------------------------------------------------

class VolumeBody(Body):
    """``PUT /v1/pools/{name}/volumes/{volume}`` (idempotent)."""

    size: int  # bytes
    format: VolumeFormat = "qcow2"


class ResizeBody(Body):
    """``POST /v1/pools/{name}/volumes/{volume}/resize``: volumes only grow."""

    size: int


class VolumeInfo(Answer):
    """A volume as its pool's driver sees it; the drivers build it too."""

    name: str
    format: str  # qcow2 | raw (str: an answer from a newer agent is still readable)
    capacity: int  # virtual size, bytes
    allocation: int  # bytes written (thin provisioning)
    source: str  # file path, or POOL/IMAGE of an RBD image


# -- disks of domains (hot-plug) -------------------------------------------------------------

class AttachBody(Body):
    """``POST /v1/domains/{name}/disks/attach``."""

    xml: str  # the <disk> the engine designed
    controller_xml: str | None = None  # a virtio-scsi controller, plugged first if missing


class DetachBody(Body):
    """``POST /v1/domains/{name}/disks/detach`` (idempotent: an absent disk is fine)."""

    source: str  # file path or POOL/IMAGE


class BlockResizeBody(Body):
    """``POST /v1/domains/{name}/disks/resize``: a running domain's disk, grown by QEMU."""

    target: str
    size: int


class DomainDisk(Answer):
    """``GET /v1/domains/{name}/disks``: one disk of the domain."""

    target: str | None = None
    bus: str | None = None
    device: str | None = None
    type: str | None = None
    format: str | None = None
    source: str | None = None


class DiskAttached(Answer):
    """Where the disk was plugged now (False: it was there already)."""

    live: bool
    config: bool
    running: bool


class DiskDetached(Answer):
    """Where the disk was unplugged now (False: it was not there)."""

    live: bool
    config: bool


class DiskResized(Answer):
    target: str
    capacity: int  # bytes, as QEMU sees it now


# -- root disks of VMs in pools --------------------------------------------------------------

class RootBody(Body):
    """``POST /v1/pools/{pool}/roots/{vm}``: a job; its result is a RootDisk."""

    image: str
    size: int | None = None  # bytes; None: the image's virtual size


class RootTemplateBody(Body):
    """``POST .../roots/{vm}/template``: a job making image ``name`` of the VM's disk."""

    name: str
    boot_from: str | None = None  # the image whose kernel boots it (direct-kernel images)


class RootDisk(Answer):
    """A root disk made (or found: ``created`` False, the calls are idempotent)."""

    source: str  # file path, or CEPH_POOL/IMAGE
    created: bool
    base: str | None = None  # linked clones: the frozen base both disks now share


class RootGrown(Answer):
    """``POST .../roots/{vm}/grow`` (body: ResizeBody): a stopped VM's root disk grown; pool
    ``default`` is the host's storage dir."""

    capacity: int  # bytes


class RootDeleted(Deleted):
    bases_removed: list[str] = Field(default_factory=list)  # bases no disk needs now
