"""API types of VM snapshots, clones and templates."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from corral.api.models import Name, _name_field, _Request


class SnapshotCreate(_Request):
    """A snapshot of a VM's disk (``memory=False``) or of its disk and memory (a running VM).

    ``quiesce`` freezes the guest's file systems around it (needs the QEMU guest agent)."""

    name: Name
    memory: bool = False
    quiesce: bool = False
    description: str | None = Field(None, max_length=1024)

    _name = _name_field("name")


class Snapshot(BaseModel):
    """One node of a VM's snapshot tree (``parent`` is None for a root)."""

    name: str
    parent: str | None
    created_at: datetime
    state: str  # the VM's state when taken: running, paused, stopped
    memory: bool  # reverting resumes the VM where it was
    current: bool  # the snapshot the VM's disk now descends from
    description: str | None = None


class CloneMode(StrEnum):
    """linked: a qcow2 overlay on a frozen copy of the source's disk (O(1));
    full: an independent copy (qemu-img convert), with progress."""

    LINKED = "linked"
    FULL = "full"


class VmClone(_Request):
    name: Name
    mode: CloneMode | None = None  # default: linked, full with a snapshot
    snapshot: Name | None = None  # clone the disk as it was in this snapshot (a full copy)
    start: bool = False

    _name = _name_field("name")
    _snapshot = _name_field("snapshot")


class TemplateCreate(_Request):
    """A template is an image made from a stopped VM's disk (flattened): create VMs from it
    with ``vm create --template NAME`` (the same as ``--image NAME``)."""

    name: Name
    vm: Name

    _name = _name_field("name")
    _vm = _name_field("vm")


class OvaExport(_Request):
    file: str  # absolute path on the VM's host (this node's machine), ending in .ova


class OvaImport(_Request):
    """Import an OVA: its first disk becomes image ``NAME-ova``, the VM a linked clone of it;
    other disks become volumes ``default/NAME-diskN`` attached to the VM."""

    file: str  # absolute path on this node's machine
    name: Name | None = None  # default: the descriptor's VirtualSystem name
    network: Name = "default"
    start: bool = False

    _name = _name_field("name")
    _network = _name_field("network")
