"""A host's recent measurements (``GET /v1/stats/host``, ``GET /v1/stats/domains/{name}``):
what corral.agent.vm_stats keeps in memory, as series of [unix time, value]."""

from __future__ import annotations

from pydantic import Field

from corral.agent_api import Answer

# name -> unit; a VM's cpu_percent is of one CPU (as top: 200 = two CPUs busy), the host's of
# all its CPUs
METRICS: dict[str, str] = {
    "cpu_percent": "%", "memory_bytes": "bytes", "disk_read_bps": "bytes/s",
    "disk_write_bps": "bytes/s", "net_rx_bps": "bytes/s", "net_tx_bps": "bytes/s"}


class StatsAnswer(Answer):
    interval_s: float = Field(description="seconds between two samples")
    keep_s: float = Field(description="how far back the agent keeps samples")
    # metric name (METRICS) -> [[unix time, value], ...], oldest first
    series: dict[str, list[tuple[float, float]]] = Field(default_factory=dict)
