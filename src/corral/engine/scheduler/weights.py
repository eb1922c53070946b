"""How eligible hosts are ranked: the lowest key wins.

The key is (group preference, capacity order, name). The group term is only non-zero for a
soft group: affinity prefers the hosts with the most members, anti-affinity the fewest; it
comes first, so a soft rule is kept whenever some eligible host allows it. Then ``spread``
takes the most free memory (then vCPUs), ``pack`` the least that still fits; the name ends
every tie, so a placement never depends on the order hosts were given in.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.engine.scheduler.model import GroupPolicy, HostView, Policy, Request, Strategy

CapacityKey = tuple[int, int, str]
Key = tuple[int, int, int, str]


def free(host: HostView, policy: Policy) -> tuple[int, int]:
    """(free vCPUs, free memory MiB) under the overcommit ratios; negative when overbooked."""
    return (policy.vcpu_capacity(host) - host.used_vcpus,
            policy.memory_capacity(host) - host.used_memory_mib)


def capacity_key(host: HostView, policy: Policy) -> CapacityKey:
    # free() inlined: this runs for every host a placement looks at
    vcpus = int(host.cpus * policy.cpu_overcommit) - host.used_vcpus
    memory = int(host.memory_mib * policy.memory_overcommit) - host.used_memory_mib
    if policy.strategy is Strategy.SPREAD:
        return (-memory, -vcpus, host.name)
    return (memory, vcpus, host.name)


def group_term(host: HostView, req: Request) -> int:
    g = req.group
    if g is None or g.strict or g.name not in host.groups:
        return 0
    members = sum(1 for vm in host.vms if g.name in vm.groups)
    return -members if g.policy is GroupPolicy.AFFINITY else members


def key(host: HostView, req: Request, policy: Policy) -> Key:
    return (group_term(host, req), *capacity_key(host, policy))


@dataclass(frozen=True, slots=True)
class Weight:
    """What ranked an eligible host, as the explanation shows it."""

    group: int  # soft group term: below 0 members here (affinity), above 0 (anti-affinity)
    free_vcpus_after: int
    free_memory_mib_after: int


def weight(host: HostView, req: Request, policy: Policy) -> Weight:
    vcpus, memory = free(host, policy)
    return Weight(group_term(host, req), vcpus - req.vcpus, memory - req.memory_mib)
