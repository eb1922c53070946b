"""Hosts and requests for the scheduler's tests: small, explicit builders."""

from __future__ import annotations

from corral.engine.scheduler import GuestOnHost, HostState, HostView, Request


def host(name: str, cpus: int = 8, memory_mib: int = 16384, *, used_vcpus: int = 0,
         used_memory_mib: int = 0, state: HostState = HostState.UP, tags: str = "",
         pools: str = "default", networks: str = "lan", cpu_models: str = "Skylake-Client",
         host_cpu: bool = True, vms: tuple[GuestOnHost, ...] = ()) -> HostView:
    """A host; tags, pools, networks and CPU models as space-separated words."""
    return HostView(name, state, cpus, memory_mib, used_vcpus, used_memory_mib,
                    frozenset(tags.split()), frozenset(pools.split()),
                    frozenset(networks.split()), frozenset(cpu_models.split()), host_cpu, vms)


def member(name: str, *groups: str) -> GuestOnHost:
    return GuestOnHost(name, frozenset(groups))


def request(vcpus: int = 1, memory_mib: int = 1024, **kw: object) -> Request:
    return Request(vcpus, memory_mib, **kw)  # type: ignore[arg-type]
