"""API types of a host's fencing and power management (``/api/v1/hosts/{name}/fence``,
``.../power``): fence methods (a fence agent and its options, tried in order) and what the
agents answered."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from corral.api.models import _Request

MAX_METHODS = 8


class FenceMethodSet(_Request):
    """``PUT /api/v1/hosts/{name}/fence``: add a method, or replace the one at ``position``."""

    agent: str = Field(..., description="A fence agent's name (fence_ipmilan, fence_redfish, "
                       "fence_corral_lab...), looked up in /usr/sbin, /usr/local/sbin, PATH")
    options: dict[str, str] = Field(default_factory=dict, description="The agent's options "
                                    "(ip, username, plug...): `key=value` lines on its stdin. "
                                    "Options that are passwords (password, passwd, "
                                    "community...) are stored encrypted and never answered")
    position: int | None = Field(None, ge=1, le=MAX_METHODS, description="Its place in the "
                                 "order (1 first); null: after the last")


class FenceMethod(BaseModel):
    """A host's fence method as answered: its secrets are named, never shown."""

    position: int
    agent: str
    options: dict[str, str] = Field(description="Options, secrets left out")
    secrets: list[str] = Field(default_factory=list, description="Secret options that are "
                               "set (their values are never answered)")


class FenceCheck(BaseModel):
    """What one method's agent answered to one action."""

    position: int
    agent: str
    action: str
    ok: bool = Field(description="The action was done (status: the device could tell)")
    power: Literal["on", "off"] | None = Field(None, description="status: the host's power "
                                                "as the device says; null: it could not tell")
    detail: str = Field("", description="The agent's message, or why it failed")


class FenceTest(BaseModel):
    """``POST .../fence/test``: `status` asked of every method."""

    host: str
    checks: list[FenceCheck]


class HostPowerSet(_Request):
    """``POST /api/v1/hosts/{name}/power``: power the host's machine through its fence
    methods (the first that confirms wins)."""

    action: Literal["on", "off", "cycle"] = Field(..., description="on, off, or cycle (off, "
                                                  "confirmed off, then on)")
    force: bool = Field(False, description="off and cycle: even with VMs running on it (they "
                        "go down with it)")
