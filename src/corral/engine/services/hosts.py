"""Hosts: registration of agents and their reported facts."""

from __future__ import annotations

from typing import Any

from corral.api import Hardware, HostAllocation, HostHugePages, HostNumaNode
from corral.api import Host as HostOut
from corral.cpulist import format_cpu_list
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, utcnow
from corral.engine.services import host_facts, host_states, vm_placement
from corral.engine.services.host_states import HostAction
from corral.errors import NotFound, Unavailable


def to_api(h: Host, allocated: HostAllocation | None = None) -> HostOut:
    """``allocated``: what its VMs take (host_facts.allocations); None: nothing counted."""
    cpu_list = h.facts.get("cpu_list")
    return HostOut(
        name=h.name, url=h.url, status=h.status,
        virt_type=h.facts.get("virt_type"), virt_note=h.facts.get("virt_note"),
        cpus=h.facts.get("cpus"), memory_mib=h.facts.get("memory_mib"), last_seen=h.last_seen,
        qos=h.facts.get("qos"),
        cpu_list=format_cpu_list(cpu_list) if cpu_list else None,
        numa_nodes=[_numa_node(n) for n in h.facts.get("numa_nodes") or []],
        **host_facts.api_fields(h, allocated),  # address, CPU model, versions, allocation
        tags=list(h.tags or []),
    )


def _numa_node(node: dict[str, Any]) -> HostNumaNode:
    return HostNumaNode(
        id=node["id"], cpus=format_cpu_list(node.get("cpus") or []),
        memory_mib=node.get("memory_mib") or 0,
        hugepages=[HostHugePages(size=_page_size(p["size_kib"]), total=p["total"], free=p["free"])
                   for p in node.get("hugepages") or []])


def _page_size(kib: int) -> str:
    return f"{kib >> 20}G" if kib % (1 << 20) == 0 else f"{kib >> 10}M" if kib % 1024 == 0 \
        else f"{kib}K"


def refresh_placement(ctx: EngineContext, host_id: str) -> dict[str, Any]:
    """The host's facts with its CPUs, NUMA nodes and free huge pages as its agent reports
    them now (free pages change as VMs start and stop); stored for `host list` too."""
    fresh = ctx.agent(host_id).facts().model_dump()
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            return fresh
        host.facts = {**host.facts, **{k: fresh.get(k) for k in vm_placement.FACT_KEYS}}
        return dict(host.facts)


def by_name(ctx: EngineContext, name: str) -> str:
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            raise NotFound(f"host {name} not found", field="name")
        return host.id


def refresh_facts(ctx: EngineContext, host_id: str) -> None:
    """Ask a joined host's agent for its facts now (over mutual TLS) and keep them."""
    facts = ctx.agent(host_id).facts().model_dump()
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            raise NotFound(f"host {host_id} not found")
        host.facts = {**host.facts, **facts}


def refresh(ctx: EngineContext, host_id: str) -> None:
    """Its facts, and the host taken as up: its agent just answered (`corral up`)."""
    refresh_facts(ctx, host_id)
    with ctx.db.session() as s:
        host_states.apply(s, host_id, HostAction.ANSWERED)
        host = s.get(Host, host_id)
        if host is not None:
            host.last_seen = utcnow()


def check_placement(ctx: EngineContext, host_id: str, hw: Hardware, cpus: int,
                    memory_mib: int, starting: bool) -> None:
    """A VM with ``hw`` fits the host's CPUs (a pin list names CPUs it has, ``auto`` finds
    enough: 409 otherwise) and, when it is about to start, the host has its huge pages free
    (asked anew from the agent: free pages move as VMs start and stop)."""
    if hw.cpu_pin is None and hw.numa is None and hw.hugepages is None:
        return
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        if host is None:
            return
        facts, name = dict(host.facts), host.name
    if starting and hw.hugepages is not None:
        facts = refresh_placement(ctx, host_id)
    vm_placement.resolve(hw, cpus, facts, name)
    if starting:
        vm_placement.check_hugepages(hw, cpus, memory_mib, facts, name)


def list_hosts(ctx: EngineContext) -> list[HostOut]:
    with ctx.db.session() as s:
        used = host_facts.allocations(s)
        return [to_api(h, used.get(h.id)) for h in s.query(Host).order_by(Host.name)]


def pick_host(ctx: EngineContext, memory_mib: int) -> Host:
    """The scheduler of a single node: the first host that is up (capacity checked by caller)."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(status="up").order_by(Host.name).first()
        if host is None:
            raise Unavailable("no host is up to run VMs; is the agent running? (`corral status`)")
        return host
