"""API types of projects and their quotas (``/api/v1/projects``), custom roles and role
assignments (``/api/v1/roles``, ``/api/v1/role-assignments``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from corral.api.models import _Request

__all__ = ["ProjectCreate", "ProjectInfo", "QuotaSet", "RoleAssignmentIn", "RoleAssignmentOut",
           "RoleCreate", "RoleInfo"]

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]*$"
Name = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
# A quota's limit: a count, or bytes for memory and disk; past 2^62 nothing could use it.
Limit = Annotated[int, Field(ge=0, le=1 << 62)]
# `corral role create --permission vm.*`: a permission or a shell-style pattern of them.
PermissionPattern = Annotated[str, Field(min_length=1, max_length=63,
                                         pattern=r"^[a-z_*?\[\]]+(\.[a-z_*?\[\]]+)?$")]


class QuotaSet(_Request):
    """Limits to set: a field given a number sets that limit, one given ``null`` clears it
    (no limit), one left out stays as it was. Memory and disk are bytes."""

    vms: Limit | None = Field(None, description="VMs")
    vcpus: Limit | None = Field(None, description="vCPUs of its VMs")
    memory: Limit | None = Field(None, description="Memory of its VMs, bytes")
    disk: Limit | None = Field(None, description="Root disks and volumes, bytes")
    volumes: Limit | None = Field(None, description="Volumes")
    snapshots: Limit | None = Field(None, description="Snapshots of its VMs")
    networks: Limit | None = Field(None, description="Networks")
    security_groups: Limit | None = Field(None, description="Security groups")

    def given(self) -> dict[str, int | None]:
        """The limits the request names (null included: a limit cleared)."""
        return {k: getattr(self, k) for k in sorted(self.model_fields_set)}


class ProjectCreate(_Request):
    name: Name
    description: str = Field("", max_length=255)
    quotas: QuotaSet | None = Field(None, description="Its first limits (none: no limit)")


class ProjectInfo(BaseModel):
    name: str
    description: str
    created_at: datetime
    quotas: dict[str, int | None] = Field(
        description="Quota -> its limit (None: no limit); memory and disk in bytes")
    usage: dict[str, int] = Field(description="Quota -> what the project uses now")
    holds: dict[str, int] = Field(
        description="What it owns, by kind (vms, networks, images, volumes, security_groups, "
        "vm_groups): a project is deleted only when all are 0")


class RoleInfo(BaseModel):
    name: str
    builtin: bool = Field(description="admin, operator, user, viewer, none: not changeable")
    description: str = ""
    permissions: list[str]


class RoleCreate(_Request):
    name: Name
    description: str = Field("", max_length=255)
    permissions: list[PermissionPattern] = Field(
        min_length=1, max_length=200,
        description="Permissions or patterns of them: vm.*, *.read, snapshot.read "
        "(GET /api/v1/permissions lists them)")


# `alice` (a user) or `@ops` (a directory group: its name or DN, as the group map gives it)
Subject = Annotated[str, Field(min_length=1, max_length=256,
                               description="A user name, or @GROUP for a directory group")]


class RoleAssignmentIn(_Request):
    subject: Subject
    role: Name
    project: str = Field("*", min_length=1, max_length=63, pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_-]*)$",
                         description="A project, or * for every project")


class RoleAssignmentOut(BaseModel):
    subject: str = Field(description="A user name, or @GROUP")
    kind: str = Field(description="user or group")
    role: str
    project: str
    created_at: datetime
