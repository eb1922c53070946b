"""Domains (libvirt's defined VMs), their root disks and cloud-init seeds, and the host's
facts: ``/v1/host``, ``/v1/domains``, ``/v1/disks``, ``/v1/seeds``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corral.agent_api import Answer, Body

DomainAction = Literal["start", "shutdown", "destroy", "reboot", "reset", "suspend", "resume"]
DomainState = Literal["running", "paused", "stopped", "crashed", "unknown"]


class HostFacts(Answer):
    """``GET /v1/host``: what the engine keeps of a host (``hosts.facts``)."""

    hostname: str
    agent_version: str
    cpus: int
    memory_mib: int
    virt_type: str  # "kvm" or "qemu" (TCG)
    virt_note: str | None = None
    libvirt_version: str
    storage_dir: str
    console_dir: str
    storage_free: int
    qos: str = "libvirt"  # who polices NIC bandwidth: libvirt <bandwidth>, or "nftables"
    state_dir: str | None = None  # the agent's own files (corral.safepaths: never a user's)


class DomainInfo(Answer):
    name: str
    uuid: str
    vm_id: str | None = None  # the engine's VM id, from the domain's metadata
    state: str


class DefineBody(Body):
    xml: str


class VcpusBody(Body):
    """``PUT /v1/domains/{name}/vcpus``: vCPUs of the running domain (up to its maximum)."""

    count: int = Field(ge=1, le=255)


class MemoryTargetBody(Body):
    """``PUT /v1/domains/{name}/memory-target``: the balloon's target in the running domain
    (at most the memory it booted with)."""

    mib: int = Field(ge=16)


class LiveResources(Answer):
    """What the running domain has now: vCPUs, and memory as the balloon leaves it."""

    vcpus: int
    vcpus_max: int  # the most it can be given while it runs
    memory_mib: int  # the memory it booted with
    balloon_mib: int  # what the guest has, the balloon taken off


class InterfaceAddress(Answer):
    """``GET /v1/domains/{name}/addresses``: seen by the guest agent or in the ARP table."""

    ip: str | None = None
    prefix: int | None = None
    mac: str | None = None
    interface: str
    source: Literal["agent", "arp"]
    family: Literal["ipv4", "ipv6"]


class DiskBody(Body):
    image: str | None = None  # None: a blank disk (installs from an ISO); size is then required
    size: int | None = None


class DiskInfo(Answer):
    path: str
    created: bool  # False: the disk was there already (the call is idempotent)


class SeedBody(Body):
    files: dict[str, str]  # meta-data, user-data[, network-config] rendered by the engine


class SeedInfo(Answer):
    path: str
    size: int
