"""/api/v1/roles, /permissions and /role-assignments: what roles hold and who holds them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from corral.api.projects import RoleAssignmentIn, RoleAssignmentOut, RoleCreate, RoleInfo
from corral.engine.context import EngineContext
from corral.engine.permissions import ALL_PROJECTS, PERMISSIONS
from corral.engine.routes.deps import context, need
from corral.engine.services import roles

router = APIRouter(prefix="/api/v1", tags=["roles"])

SubjectQuery = Query(min_length=1, max_length=256,
                     description="A user name, or @GROUP for a directory group")


@router.get("/roles", response_model=list[RoleInfo], dependencies=need("role.read"))
def list_roles(ctx: EngineContext = Depends(context)) -> list[RoleInfo]:
    """The built-in roles, least to most, then the custom ones."""
    return roles.list_roles(ctx)


@router.post("/roles", status_code=201, response_model=RoleInfo, dependencies=need("role.update"))
def create_role(req: RoleCreate, ctx: EngineContext = Depends(context)) -> RoleInfo:
    """A custom role: the permissions its patterns match (``vm.*``, ``*.read``); a pattern
    that matches none is a 422."""
    return roles.create_role(ctx, req.name, req.permissions, req.description)


@router.delete("/roles/{name}", status_code=204, dependencies=need("role.update"))
def delete_role(name: str, ctx: EngineContext = Depends(context)) -> Response:
    """A custom role no one holds (409 naming who does); built-in roles stay."""
    roles.delete_role(ctx, name)
    return Response(status_code=204)


@router.get("/permissions", response_model=list[str], dependencies=need("role.read"))
def list_permissions() -> list[str]:
    """Every permission a role may hold, ``resource.action``."""
    return list(PERMISSIONS)


@router.get("/role-assignments", response_model=list[RoleAssignmentOut],
            dependencies=need("role.read"))
def list_assignments(
    subject: str | None = Query(None, min_length=1, max_length=256,
                                description="Only this user's, or @GROUP's"),
    project: str | None = Query(None, max_length=63,
                                description="Only those on this project (* : on every one)"),
    ctx: EngineContext = Depends(context),
) -> list[RoleAssignmentOut]:
    return roles.list_assignments(ctx, subject, project or None)


@router.post("/role-assignments", status_code=201, response_model=RoleAssignmentOut,
             dependencies=need("role.update"))
def assign(req: RoleAssignmentIn, ctx: EngineContext = Depends(context)) -> RoleAssignmentOut:
    """Give a user (``alice``) or a directory group (``@ops``) a role on one project or on
    every one (``*``); it holds from the next request on."""
    return roles.assign(ctx, req.subject, req.role, req.project)


@router.delete("/role-assignments", status_code=204, dependencies=need("role.update"))
def unassign(
    subject: str = SubjectQuery,
    role: str = Query(min_length=1, max_length=63),
    project: str = Query(ALL_PROJECTS, min_length=1, max_length=63,
                         description="The project it was given on, or *"),
    ctx: EngineContext = Depends(context),
) -> Response:
    roles.unassign(ctx, subject, role, project)
    return Response(status_code=204)
