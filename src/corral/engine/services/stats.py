"""A VM's or a host's recent CPU, memory, disk and network use, asked of the host's agent
(corral.agent.vm_stats keeps the last 10 minutes in memory). A later long-term backend
(Prometheus) would answer the same ``Stats`` here, with its own ``source``."""

from __future__ import annotations

from typing import Literal

from corral.agent_api.stats import METRICS, StatsAnswer
from corral.api.stats import Stats, StatSeries
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.engine.services.vm_lookup import find_vm
from corral.errors import NotFound


def _shown(kind: Literal["vm", "host"], name: str, host: str | None, answer: StatsAnswer | None) -> Stats:
    got = answer.series if answer is not None else {}
    return Stats(kind=kind, name=name, host=host,
                 interval_s=answer.interval_s if answer else None,
                 keep_s=answer.keep_s if answer else None,
                 series={m: StatSeries(unit=unit, points=got.get(m, []))
                         for m, unit in METRICS.items()})


def vm_stats(ctx: EngineContext, name: str, since: float | None = None) -> Stats:
    """VM ``name``'s samples from its host's agent; empty series for a VM on no host (404:
    no such VM; 502: its host does not answer)."""
    with ctx.db.session() as s:
        host_id = find_vm(s, name).host_id
        host = s.get(Host, host_id) if host_id else None
        host_name = host.name if host is not None else None
    if host_id is None:
        return _shown("vm", name, None, None)
    return _shown("vm", name, host_name, ctx.agent(host_id).domain_stats(name, since))


def host_stats(ctx: EngineContext, name: str, since: float | None = None) -> Stats:
    """Host ``name``'s samples (its VMs' sums; 404: no such host)."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            raise NotFound(f"host {name} not found (`corral host list`)", field="name")
        host_id = host.id
    return _shown("host", name, name, ctx.agent(host_id).host_stats(since))
