"""/api/v1/projects: projects, their quotas and what they use."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from corral.api.projects import ProjectCreate, ProjectInfo, QuotaSet
from corral.engine.context import EngineContext
from corral.engine.routes.deps import caller, context, need
from corral.engine.services import projects
from corral.engine.services.auth import Principal

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


@router.get("", response_model=list[ProjectInfo], dependencies=need("project.read"))
def list_projects(who: Principal = Depends(caller),
                  ctx: EngineContext = Depends(context)) -> list[ProjectInfo]:
    """The projects the caller holds a role on (all of them for a role on ``*``), with their
    limits and use."""
    return projects.list_projects(ctx, who.access)


@router.post("", status_code=201, response_model=ProjectInfo,
             dependencies=need("project.create"))
def create_project(req: ProjectCreate, ctx: EngineContext = Depends(context)) -> ProjectInfo:
    """A new, empty project; give users roles on it with POST /api/v1/role-assignments."""
    limits = req.quotas.given() if req.quotas is not None else {}
    return projects.create(ctx, req.name, req.description, limits)


@router.get("/{name}", response_model=ProjectInfo, dependencies=need("project.read"))
def get_project(name: str, who: Principal = Depends(caller),
                ctx: EngineContext = Depends(context)) -> ProjectInfo:
    """Its limits against its use, and what it owns; 404 for one the caller does not see."""
    return projects.show(ctx, name, who.access)


@router.delete("/{name}", status_code=204, dependencies=need("project.delete"))
def delete_project(name: str, ctx: EngineContext = Depends(context)) -> Response:
    """An empty project and the role assignments on it; 409 while it owns anything (the
    answer names what), and for ``default``."""
    projects.delete(ctx, name)
    return Response(status_code=204)


@router.put("/{name}/quotas", response_model=ProjectInfo, dependencies=need("project.update"))
def set_quotas(name: str, req: QuotaSet, ctx: EngineContext = Depends(context)) -> ProjectInfo:
    """Set the limits named (``null``: no limit); those left out stay. A limit below the
    current use refuses more and takes nothing away."""
    return projects.set_quota(ctx, name, req.given())
