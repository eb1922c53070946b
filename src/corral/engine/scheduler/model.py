"""What the scheduler is given: hosts as the engine sees them, a request, a policy.

All frozen: a placement is a pure function of them (no I/O, no clock), so the same inputs
always choose the same host and explain it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from corral.api.host_state import HostState as HostState  # the API's one enum, re-exported
from corral.errors import InvalidInput

# libvirt's CPU modes that copy the host's CPU instead of naming a model
HOST_PASSTHROUGH, HOST_MODEL = "host-passthrough", "host-model"
HOST_CPU_MODES = frozenset({HOST_PASSTHROUGH, HOST_MODEL})


class GroupPolicy(StrEnum):
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"


class Strategy(StrEnum):
    SPREAD = "spread"  # most free first: load evens out, a host loss hurts less
    PACK = "pack"  # least free first that fits: whole hosts stay free for big VMs


@dataclass(frozen=True, slots=True)
class GuestOnHost:
    """A VM defined on a host (running or not: its capacity is allocated) and its groups."""

    name: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HostView:
    """A host's capacity, what is allocated on it and what it can reach."""

    name: str
    state: HostState
    cpus: int
    memory_mib: int
    used_vcpus: int = 0
    used_memory_mib: int = 0
    tags: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    cpu_models: frozenset[str] = frozenset()  # libvirt model names the host can run
    host_cpu: bool = True  # whether host-passthrough / host-model work (KVM; not under TCG)
    vms: tuple[GuestOnHost, ...] = ()
    groups: frozenset[str] = field(init=False)  # every group with a member here

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", frozenset(g for vm in self.vms for g in vm.groups))

    def members(self, group: str) -> list[str]:
        return [vm.name for vm in self.vms if group in vm.groups]


@dataclass(frozen=True, slots=True)
class Group:
    """An affinity group: strict is a filter, soft only a weight."""

    name: str
    policy: GroupPolicy
    strict: bool = True

    def describe(self) -> str:
        return f"{self.policy.value} {self.name} ({'strict' if self.strict else 'soft'})"


@dataclass(frozen=True, slots=True)
class Request:
    """What one VM needs. ``cpu_model`` None: any (libvirt's default); ``host`` pins."""

    vcpus: int
    memory_mib: int
    tags: frozenset[str] = frozenset()
    pool: str | None = None
    networks: frozenset[str] = frozenset()
    cpu_model: str | None = None
    group: Group | None = None
    host: str | None = None
    name: str = ""  # the VM's, for messages and for reserve()

    def __post_init__(self) -> None:
        if self.vcpus < 1:
            raise InvalidInput(f"vcpus must be at least 1, not {self.vcpus}", field="vcpus")
        if self.memory_mib < 1:
            raise InvalidInput(f"memory must be at least 1 MiB, not {self.memory_mib}",
                               field="memory_mib")

    def describe(self) -> str:
        parts = [f"{self.vcpus} vCPU{'s' if self.vcpus != 1 else ''}", f"{self.memory_mib} MiB"]
        if self.tags:
            parts.append("tags " + ", ".join(sorted(self.tags)))
        if self.pool:
            parts.append(f"pool {self.pool}")
        if self.networks:
            parts.append("networks " + ", ".join(sorted(self.networks)))
        if self.cpu_model:
            parts.append(f"CPU {self.cpu_model}")
        if self.group:
            parts.append(f"group {self.group.describe()}")
        if self.host:
            parts.append(f"pinned to {self.host}")
        return "; ".join(parts)


def ratio(r: float) -> str:
    """An overcommit ratio as the messages show it: ``x4.0``, ``x1.5``, ``x1.25``."""
    text = f"{r:g}"
    return f"x{text}" if "." in text or "e" in text else f"x{r:.1f}"


@dataclass(frozen=True, slots=True)
class Policy:
    """How to choose among eligible hosts; overcommit defaults are Nova's."""

    strategy: Strategy = Strategy.SPREAD
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0

    def __post_init__(self) -> None:
        for name in ("cpu_overcommit", "memory_overcommit"):
            ratio = getattr(self, name)
            if not ratio > 0 or ratio > 1000:
                raise InvalidInput(f"{name} must be above 0 and at most 1000, not {ratio}",
                                   field=name)

    def vcpu_capacity(self, host: HostView) -> int:
        return int(host.cpus * self.cpu_overcommit)

    def memory_capacity(self, host: HostView) -> int:
        return int(host.memory_mib * self.memory_overcommit)

    def describe(self) -> str:
        return (f"{self.strategy.value}, overcommit CPU {ratio(self.cpu_overcommit)}, "
                f"memory {ratio(self.memory_overcommit)}")
