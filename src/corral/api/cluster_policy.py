"""API types of the cluster's placement policy (``/api/v1/cluster/policy``,
`corral cluster policy`): load balancing by live migration."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from corral.api.models import _Request

__all__ = ["BalanceDecision", "ClusterPolicy", "ClusterPolicySet", "HostLoad"]

Amount = int | str  # 80 or "80%"; 60 or "60s", "5m"


class ClusterPolicySet(_Request):
    """Set the policy; what is not given keeps its value (``none`` changes only the mode)."""

    mode: Literal["none", "balance"] = Field(description="balance: move VMs live off hosts "
                                             "that stay overloaded; none: leave them")
    cpu_percent: Amount | None = Field(None, description="CPU threshold (80 or \"80%\")")
    memory_percent: Amount | None = Field(None, description="Memory threshold (85 or \"85%\")")
    interval_s: Amount | None = Field(None, description="How often the balancer looks "
                                      "(60 or \"60s\", \"2m\")")
    window_s: Amount | None = Field(None, description="How long a host must stay above a "
                                    "threshold (\"3m\")")
    cooldown_s: Amount | None = Field(None, description="How long a VM that moved stays put "
                                      "(\"30m\")")
    margin_percent: Amount | None = Field(None, description="How far below each threshold a "
                                          "target must stay with the VM (\"10%\")")


class HostLoad(BaseModel):
    host: str
    status: str
    cpu_percent: float | None = Field(description="The last report: CPU its VMs used")
    memory_percent: float | None = Field(description="The last report: memory in use")
    window_cpu_percent: float | None = Field(description="Mean over the window")
    window_memory_percent: float | None = Field(description="Mean over the window")
    samples: int = Field(description="Reports in the window")
    covered: bool = Field(description="Watched for a whole window since it last gave or took "
                          "a VM: it counts")
    above: list[str] = Field(description="The thresholds it stays above (CPU, memory)")


class BalanceDecision(BaseModel):
    at: datetime
    vm: str | None = Field(None, description="The VM moved; none: nothing could move")
    source: str | None = None
    target: str | None = None
    reason: str
    operation: str | None = Field(None, description="The migration's operation")
    status: str | None = Field(None, description="The operation's status now")


class ClusterPolicy(BaseModel):
    mode: str
    cpu_percent: int
    memory_percent: int
    interval_s: int
    window_s: int
    cooldown_s: int
    margin_percent: int
    running: bool = Field(description="This engine's balancer loop runs")
    hosts: list[HostLoad]
    decisions: list[BalanceDecision] = Field(description="The most recent first (20 kept)")
