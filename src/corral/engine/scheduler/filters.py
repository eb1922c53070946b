"""The hard rules: each filter says nothing when a host passes, or why not, with figures.

A pinned host goes through every filter too: pinning chooses among eligible hosts, it is
never a way around a rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from corral.engine.scheduler.model import (
    HOST_CPU_MODES,
    GroupPolicy,
    HostState,
    HostView,
    Policy,
    Request,
    ratio,
)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one filter refused one host: ``filter`` is its short name (``memory``...)."""

    filter: str
    detail: str

    def __str__(self) -> str:
        return f"{self.filter}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Context:
    """What a filter needs to know beyond the host: where the request's group has members."""

    group_hosts: frozenset[str] = frozenset()


Filter = Callable[[HostView, Request, Policy, Context], Reason | None]


def state(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    if host.state is HostState.UP:
        return None
    return Reason("state", f"{host.state.value}, needs up")


def vcpus(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    capacity = policy.vcpu_capacity(host)
    free = capacity - host.used_vcpus
    if req.vcpus <= free:
        return None
    return Reason("vCPUs", f"needs {req.vcpus}, {max(free, 0)} free of {host.cpus} "
                           f"{ratio(policy.cpu_overcommit)} ({host.used_vcpus} allocated)")


def memory(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    free = policy.memory_capacity(host) - host.used_memory_mib
    if req.memory_mib <= free:
        return None
    return Reason("memory", f"needs {req.memory_mib} MiB, {max(free, 0)} MiB free of "
                            f"{host.memory_mib} MiB {ratio(policy.memory_overcommit)}")


def tags(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    missing = req.tags - host.tags
    if not missing:
        return None
    has = ", ".join(sorted(host.tags)) or "none"
    return Reason("tags", f"lacks {', '.join(sorted(missing))} (has {has})")


def pool(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    if req.pool is None or req.pool in host.pools:
        return None
    return Reason("pool", f"{req.pool} not reachable from this host")


def networks(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    missing = req.networks - host.networks
    if not missing:
        return None
    return Reason("networks", f"{', '.join(sorted(missing))} not reachable from this host")


def cpu_model(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    model = req.cpu_model
    if model is None:
        return None
    if model in HOST_CPU_MODES:
        return None if host.host_cpu else Reason("CPU model", f"{model} not possible here (no KVM)")
    if model in host.cpu_models:
        return None
    return Reason("CPU model", f"{model} not supported ({len(host.cpu_models)} models are)")


def group(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    g = req.group
    if g is None or not g.strict:
        return None
    if g.policy is GroupPolicy.ANTI_AFFINITY:
        if g.name not in host.groups:
            return None
        return Reason("group", f"{g.describe()}: {', '.join(host.members(g.name))} already here")
    if not ctx.group_hosts or host.name in ctx.group_hosts:
        return None  # affinity: the first member goes anywhere; the others follow it
    where = ", ".join(sorted(ctx.group_hosts))
    return Reason("group", f"{g.describe()}: members are on {where}")


def pinned(host: HostView, req: Request, policy: Policy, ctx: Context) -> Reason | None:
    if req.host is None or req.host == host.name:
        return None
    return Reason("pinned", f"the request names host {req.host}")


# In the order the explanation lists them; every one is evaluated, so a host shows all
# the reasons it was refused, not only the first.
FILTERS: tuple[Filter, ...] = (state, pinned, vcpus, memory, tags, pool, networks, cpu_model,
                               group)


def check(host: HostView, req: Request, policy: Policy, ctx: Context) -> tuple[Reason, ...]:
    """Every reason ``host`` cannot take ``req``; empty when it is eligible."""
    return tuple(r for f in FILTERS if (r := f(host, req, policy, ctx)) is not None)


def eligible(host: HostView, req: Request, policy: Policy, ctx: Context) -> bool:
    """Whether ``host`` passes every filter (stops at the first refusal)."""
    return all(f(host, req, policy, ctx) is None for f in FILTERS)
