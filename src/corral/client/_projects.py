"""The SDK's calls for projects and quotas, custom roles and role assignments (a part of
corral.client.Client)."""

from __future__ import annotations

from typing import Any

import httpx

from corral.api.projects import (
    ProjectCreate,
    ProjectInfo,
    QuotaSet,
    RoleAssignmentIn,
    RoleAssignmentOut,
    RoleCreate,
    RoleInfo,
)


class ProjectsApi:
    """Mixed into Client, which does the HTTP."""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    # -- projects -------------------------------------------------------------------------
    def list_projects(self) -> list[ProjectInfo]:
        """The projects the caller sees, with their limits and use."""
        return [ProjectInfo.model_validate(p) for p in self._json("GET", "/api/v1/projects")]

    def get_project(self, name: str) -> ProjectInfo:
        return ProjectInfo.model_validate(self._json("GET", f"/api/v1/projects/{name}"))

    def create_project(self, req: ProjectCreate) -> ProjectInfo:
        body = req.model_dump(mode="json", exclude_unset=True)
        return ProjectInfo.model_validate(self._json("POST", "/api/v1/projects", json=body))

    def delete_project(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/projects/{name}")

    def set_quotas(self, name: str, req: QuotaSet) -> ProjectInfo:
        """Set the limits ``req`` names (``None`` given: no limit); the others stay."""
        body = req.model_dump(mode="json", exclude_unset=True)
        return ProjectInfo.model_validate(
            self._json("PUT", f"/api/v1/projects/{name}/quotas", json=body))

    # -- roles ----------------------------------------------------------------------------
    def list_roles(self) -> list[RoleInfo]:
        return [RoleInfo.model_validate(r) for r in self._json("GET", "/api/v1/roles")]

    def create_role(self, req: RoleCreate) -> RoleInfo:
        body = req.model_dump(mode="json")
        return RoleInfo.model_validate(self._json("POST", "/api/v1/roles", json=body))

    def delete_role(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/roles/{name}")

    def list_permissions(self) -> list[str]:
        return [str(p) for p in self._json("GET", "/api/v1/permissions")]

    # -- role assignments -----------------------------------------------------------------
    def list_role_assignments(self, subject: str | None = None,
                              project: str | None = None) -> list[RoleAssignmentOut]:
        """All of them, or those of ``subject`` (a user, or @GROUP) and/or on ``project``
        (``*``: those on every project). The client's default project filters nothing."""
        params: dict[str, Any] = {"project": project}  # None: no filter, not the default
        if subject is not None:
            params["subject"] = subject
        return [RoleAssignmentOut.model_validate(a)
                for a in self._json("GET", "/api/v1/role-assignments", params=params)]

    def assign_role(self, req: RoleAssignmentIn) -> RoleAssignmentOut:
        body = req.model_dump(mode="json")
        return RoleAssignmentOut.model_validate(
            self._json("POST", "/api/v1/role-assignments", json=body))

    def unassign_role(self, subject: str, role: str, project: str = "*") -> None:
        self.request("DELETE", "/api/v1/role-assignments",
                     params={"subject": subject, "role": role, "project": project})
