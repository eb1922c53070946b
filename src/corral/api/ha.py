"""API types of high availability's state (``GET /api/v1/ha``, `corral ha status`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["CorosyncConf", "CorosyncNode", "HaHost", "HaStatus", "HaVm"]


class HaHost(BaseModel):
    name: str
    state: str = Field(description="Its HA state in words: up, maintenance, or lost and why "
                       "its VMs may or may not run elsewhere yet")
    silent_s: float = Field(description="Seconds since its last report")
    fence: str = Field(description="none | fencing | confirmed | failed")
    fence_configured: bool = Field(description="It has a fence method "
                                   "(`corral host fence set`)")
    quorum: str = Field(description="unknown | in | out: the host as the quorate membership "
                        "sees it (unknown: no quorum provider)")
    lease: str = Field("", description="Its guard's lease as its last report said: armed "
                       "(with the seconds left then), not armed (no HA VMs), self-fenced (it "
                       "lapsed and the guard killed its QEMUs), or none (no guard)")


class HaVm(BaseModel):
    name: str
    host: str | None
    priority: int
    wants_running: bool
    waiting: str | None = Field(description="Why it does not run again yet (None: nothing "
                                "to wait for)")
    recovering: bool = Field(description="Its recovery on another host is under way")


class HaStatus(BaseModel):
    detect_s: float
    lease_s: float
    hosts: list[HaHost]
    vms: list[HaVm] = Field(description="HA VMs, highest priority first")


class CorosyncNode(BaseModel):
    nodeid: int = Field(description="From the host name alone (stable as hosts come and go)")
    name: str = Field(description="The corral host name")
    address: str = Field(description="Where its peers reach it: the address of its agent")


class CorosyncConf(BaseModel):
    """``GET /api/v1/ha/corosync-conf``: the corosync.conf every host of the cluster needs
    (`corral ha corosync-conf`)."""

    nodes: list[CorosyncNode]
    text: str = Field(description="/etc/corosync/corosync.conf, the same on every host")
