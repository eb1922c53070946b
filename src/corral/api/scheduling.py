"""API types of placement (``corral vm create --explain``, ``corral vm placement``) and of
affinity groups (``corral vm group``, ``/api/v1/vm-groups``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from corral.api.models import Name, _name_field, _Request

__all__ = ["HostVerdict", "Placement", "PlacementReason", "VmGroup", "VmGroupCreate",
           "VmGroupPolicy"]


class VmGroupPolicy(StrEnum):
    AFFINITY = "affinity"  # its VMs on one host
    ANTI_AFFINITY = "anti-affinity"  # its VMs each on a host of its own


class VmGroupCreate(_Request):
    name: Name
    policy: VmGroupPolicy
    strict: bool = Field(True, description="strict: a rule placement never breaks (a VM that "
                         "cannot keep it is refused); soft: kept when some host allows it")

    _name = _name_field("name")


class VmGroup(BaseModel):
    name: str
    project: str = Field("default", description="The project it belongs to")
    policy: VmGroupPolicy
    strict: bool
    members: list[str] = Field([], description="Its VMs, by name")
    hosts: dict[str, list[str]] = Field({}, description="Where its members are: host -> VMs")
    created_at: datetime


class PlacementReason(BaseModel):
    filter: str = Field(description="The rule that refused the host: state, pinned, vCPUs, "
                        "memory, tags, pool, networks, CPU model, group")
    detail: str = Field(description="Why, with figures")


class HostVerdict(BaseModel):
    """How one host was judged for the VM."""

    host: str
    state: str
    eligible: bool
    rank: int | None = Field(None, description="1: the best; null when not eligible")
    reasons: list[PlacementReason] = Field([], description="Every rule it fails")
    free_vcpus_after: int | None = Field(None, description="vCPUs it would have left "
                                         "(overcommit included)")
    free_memory_mib_after: int | None = None
    group_weight: int | None = Field(None, description="A soft group's term: below 0 draws "
                                     "(affinity members here), above 0 pushes away")


class Placement(BaseModel):
    """Where a VM goes (or runs) and why: every host's verdict, best first."""

    vm: str
    request: str = Field(description="What the VM needs, in words")
    policy: str = Field(description="Strategy and overcommit ratios")
    chosen: str | None = Field(description="The host it goes to; null: refused")
    current: str | None = Field(None, description="The host it is on (`vm placement`)")
    summary: str | None = Field(None, description="Why no host can take it, in one line")
    hosts: list[HostVerdict]
    text: list[str] = Field(description="The explanation as the CLI prints it")
