"""Domains (libvirt's defined VMs), their root disks and cloud-init seeds, and the host's
facts: ``/v1/host``, ``/v1/domains``, ``/v1/disks``, ``/v1/seeds``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corral.agent_api import Answer, Body

DomainAction = Literal["start", "shutdown", "destroy", "reboot", "reset", "suspend", "resume"]
DomainState = Literal["running", "paused", "stopped", "crashed", "unknown"]


class HugePages(Answer):
    """Huge pages of one size on one NUMA node (sysfs ``hugepages-SIZEkB``)."""

    size_kib: int  # 2048 (2M) or 1048576 (1G) on x86-64
    total: int
    free: int


class NumaNode(Answer):
    """One of the host's NUMA nodes: its online CPUs, memory and huge pages."""

    id: int
    cpus: list[int] = Field(default_factory=list)
    memory_mib: int = 0
    hugepages: list[HugePages] = Field(default_factory=list)


class HostAddress(Answer):
    """One address of a host's interface (the engine picks the one in the cluster's
    migration network)."""

    interface: str
    address: str  # without a zone (fe80::1, not fe80::1%eth0)
    prefix: int  # length of the network's prefix (24 for a /24)


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
    # Placement (pinning, guest NUMA, huge pages); an older agent leaves them out: None.
    cpu_list: list[int] | None = None  # online CPUs
    numa_nodes: list[NumaNode] | None = None
    hugetlbfs: list[int] | None = None  # page sizes (KiB) with a hugetlbfs mount QEMU can use
    # The cluster's host facts (agent/host_facts.py); an older agent leaves them out: None.
    cpu_model: str | None = None  # libvirt's name of the host CPU
    cpu_vendor: str | None = None
    cpu_flags: list[str] | None = None  # features beyond the model's own
    # Named CPU models a guest may have here (libvirt's domain capabilities); None: unknown
    cpu_models: list[str] | None = None
    hypervisor_type: str | None = None  # libvirt's driver: QEMU (TEST under the test driver)
    hypervisor_version: str | None = None  # QEMU's version on the qemu driver
    memory_free_mib: int | None = None  # MemAvailable when reported
    # Every address of every interface but loopback (migration.network); None: older agent
    addresses: list[HostAddress] | None = None


class DomainInfo(Answer):
    name: str
    uuid: str
    vm_id: str | None = None  # the engine's VM id, from the domain's metadata
    state: str
    # Why a stopped or crashed domain is so (libvirt's reason): shutdown (the guest powered
    # off), destroyed, crashed (QEMU died), failed (it could not start), migrated, saved,
    # daemon, panicked, unknown (a host that rebooted)...; "" otherwise, and from an older
    # agent.
    reason: str = ""


class DefineBody(Body):
    xml: str


class VcpusBody(Body):
    """``PUT /v1/domains/{name}/vcpus``: vCPUs of the running domain (up to its maximum)."""

    count: int = Field(ge=1, le=255)


class MemoryTargetBody(Body):
    """``PUT /v1/domains/{name}/memory-target``: the balloon's target in the running domain
    (at most the memory it booted with)."""

    mib: int = Field(ge=16)


class MemoryPlugBody(Body):
    """``PUT /v1/domains/{name}/memory``: plug the DIMM ``xml`` (designed by the engine) into
    the running domain so that it has ``total_mib``; one that has it already is left as it
    is (a retried call plugs nothing twice)."""

    xml: str = Field(max_length=4096)
    total_mib: int = Field(ge=16)


class LiveResources(Answer):
    """What the running domain has now: vCPUs, and memory as the balloon leaves it."""

    vcpus: int
    vcpus_max: int  # the most it can be given while it runs
    memory_mib: int  # the memory it booted with, and the DIMMs plugged in since
    balloon_mib: int  # what the guest has, the balloon taken off
    memory_max_mib: int | None = None  # memory hot-plug: the most it can have (<maxMemory>)
    memory_slots_free: int = 0  # DIMM slots left for it


class InterfaceAddress(Answer):
    """``GET /v1/domains/{name}/addresses``: seen by the guest agent or in the ARP table."""

    ip: str | None = None
    prefix: int | None = None
    mac: str | None = None
    interface: str
    source: Literal["agent", "arp"]
    family: Literal["ipv4", "ipv6"]


class GuestAgentStatus(Answer):
    """``GET /v1/domains/{name}/guest-agent``: whether qemu-guest-agent answers a ping."""

    answers: bool


EXEC_TIMEOUT_MAX = 300  # seconds a guest command may take before the call gives up on it
EXEC_INPUT_MAX = 1 << 20  # bytes of stdin


class GuestExecBody(Body):
    """``POST /v1/domains/{name}/guest-agent/exec``: run a command in the guest."""

    command: list[str] = Field(min_length=1, max_length=256)  # argv; [0] in the guest's PATH
    stdin: str | None = Field(None, max_length=EXEC_INPUT_MAX)
    timeout: float = Field(30, gt=0, le=EXEC_TIMEOUT_MAX)


class GuestExecResult(Answer):
    """Its exit code (None with a signal, or still running when ``timed_out``) and
    output, each stream cut at 1 MiB (``truncated``)."""

    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    timed_out: bool = False
    pid: int | None = None


class GraphicsInfo(Answer):
    """``GET /v1/domains/{name}/graphics``: a display of the running domain (live XML)."""

    type: str  # vnc | spice
    port: int | None = None  # the TCP port autoport gave it
    listen: str | None = None  # the address it listens on


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
