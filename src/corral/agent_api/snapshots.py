"""Snapshots of domains, clones of VM disks and templates: ``/v1/domains/{vm}/snapshots``,
``/v1/disks/{vm}/linked-clone``, ``/v1/disks/{vm}/full-clone``, ``/v1/images/{name}/from-disk``
and ``/v1/disks/collect-bases``. (Root disks in pools have their own clone and template
routes: corral.agent_api.pools.)"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from corral.agent_api import Answer, Body


class SnapshotBody(Body):
    """``POST /v1/domains/{vm}/snapshots`` (idempotent: an existing name is answered)."""

    name: str
    memory: bool = False
    quiesce: bool = False
    description: str | None = None


class SnapshotInfo(Answer):
    """One node of a domain's snapshot tree."""

    name: str
    parent: str | None = None
    created_at: datetime
    state: str  # the domain's state when taken: running, paused, stopped
    memory: bool
    current: bool
    description: str | None = None
    disk_only: bool = False  # taken of a running domain without its memory


class CloneBody(Body):
    """``PUT .../linked-clone`` and ``POST .../full-clone`` (a job) of ``/v1/disks/{vm}`` and
    of ``/v1/pools/{pool}/roots/{vm}`` (a root disk in a pool)."""

    source: str  # the VM whose disk is cloned
    snapshot: str | None = None  # full clones only (of dir/shared pools): as in this snapshot


class ClonedDisk(Answer):
    """A clone's disk made (or found: ``created`` False; the calls are idempotent)."""

    path: str
    created: bool
    base: str | None = None  # linked clones: the frozen base both disks now share


class TemplateBody(Body):
    """``POST /v1/images/{name}/from-disk``: a job flattening a VM's disk into an image; its
    result is a ``corral.agent_api.images.ImageInfo``."""

    vm: str
    boot_from: str | None = None  # the image whose direct-boot files the template gets


class BasesRemoved(Answer):
    """``POST /v1/disks/collect-bases``: frozen bases no disk used any more."""

    removed: list[str] = Field(default_factory=list)
