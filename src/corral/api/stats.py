"""Recent measurements of a VM or a host (``GET /api/v1/vms/{name}/stats``,
``GET /api/v1/hosts/{name}/stats``).

Each metric is a series of ``[unix time, value]`` points, oldest first, after ``?since=``: the
shape Prometheus' range queries answer, so a long-term backend can serve the same endpoint
later (``source`` says which one answered; today the host's agent, from memory)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class StatSeries(BaseModel):
    unit: str = Field(description="%, bytes or bytes/s")
    points: list[tuple[float, float]] = Field(
        default_factory=list, description="[unix time, value], oldest first")


class Stats(BaseModel):
    kind: Literal["vm", "host"]
    name: str
    host: str | None = Field(None, description="the host that measured it (none: the VM is "
                             "on no host)")
    source: str = Field("agent", description="where the points come from: `agent` (the "
                        "host's agent keeps the last 10 minutes in memory)")
    interval_s: float | None = Field(None, description="seconds between two points")
    keep_s: float | None = Field(None, description="how far back points are kept")
    series: dict[str, StatSeries] = Field(
        default_factory=dict, description="cpu_percent (a VM: 100 = one CPU busy; a host: "
        "of all its CPUs), memory_bytes, disk_read_bps, disk_write_bps, net_rx_bps, "
        "net_tx_bps")
