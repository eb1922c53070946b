"""``GET /v1/stats/host`` and ``GET /v1/stats/domains/{name}``: the recent samples the
agent keeps in memory (corral.agent.vm_stats), after ``?since=`` (unix seconds)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from corral.agent.vm_stats import StatsSampler
from corral.agent_api.stats import StatsAnswer

_SINCE = Query(None, ge=0, description="only samples after this unix time")


def router(sampler: StatsSampler) -> APIRouter:
    r = APIRouter()

    @r.get("/v1/stats/host", response_model=StatsAnswer)
    def host_stats(since: float | None = _SINCE) -> StatsAnswer:
        return sampler.series(None, since)

    @r.get("/v1/stats/domains/{name}", response_model=StatsAnswer)
    def domain_stats(name: str, since: float | None = _SINCE) -> StatsAnswer:
        """Empty series for a VM this host holds no samples of (not running here)."""
        return sampler.series(name, since)

    return r
