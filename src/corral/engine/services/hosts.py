"""Hosts: registration of agents and their reported facts."""

from __future__ import annotations

from corral.api import Host as HostOut
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, utcnow
from corral.errors import Unavailable


def to_api(h: Host) -> HostOut:
    return HostOut(
        name=h.name, url=h.url, status=h.status,
        virt_type=h.facts.get("virt_type"), virt_note=h.facts.get("virt_note"),
        cpus=h.facts.get("cpus"), memory_mib=h.facts.get("memory_mib"), last_seen=h.last_seen,
        qos=h.facts.get("qos"),
    )


def register(ctx: EngineContext, name: str, url: str, token: str) -> HostOut:
    """Add or update a host; its agent must answer with its facts."""
    from corral.engine.agent_client import AgentClient

    probe = AgentClient(url, token)
    try:
        facts = probe.facts().model_dump()
    finally:
        probe.close()
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            host = Host(name=name, url=url, token=token)
            s.add(host)
        host.url, host.token, host.facts = url, token, facts
        host.status, host.last_seen = "up", utcnow()
        s.flush()
        ctx.forget_agent(host.id)
        return to_api(host)


def list_hosts(ctx: EngineContext) -> list[HostOut]:
    with ctx.db.session() as s:
        return [to_api(h) for h in s.query(Host).order_by(Host.name)]


def pick_host(ctx: EngineContext, memory_mib: int) -> Host:
    """The scheduler of a single node: the first host that is up (capacity checked by caller)."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(status="up").order_by(Host.name).first()
        if host is None:
            raise Unavailable("no host is up to run VMs; is the agent running? (`corral status`)")
        return host
