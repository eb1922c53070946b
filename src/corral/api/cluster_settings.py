"""API types of the cluster's settings (``/api/v1/cluster/settings``, `corral cluster set`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from corral.api.models import _Request

__all__ = ["ClusterSetting", "ClusterSettingSet"]

Value = bool | int | float | str | None


class ClusterSetting(BaseModel):
    key: str
    value: Value = Field(description="What applies now: the value set, else the default")
    default: Value
    set: bool = Field(description="An admin set it (`corral cluster unset` brings the "
                      "default back)")
    kind: str = Field(description="bool, int, percent, duration (seconds), cidr or choice")
    choices: list[str] | None = None
    help: str
    updated_at: datetime | None = None


class ClusterSettingSet(_Request):
    value: bool | int | float | str = Field(description="The new value; text is parsed as "
                                            "the setting's kind (\"on\", \"90s\", \"80%\")")
