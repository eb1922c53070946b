"""Dependencies shared by the routes: the engine context, the bearer-token check, the
project a request acts in (``?project=``) and the permission each route declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from corral.engine import projects
from corral.engine.access import DEFAULT_PROJECT, project_names
from corral.engine.context import EngineContext
from corral.engine.db.models import StoragePool, Volume
from corral.engine.permissions import ALL_PROJECTS, PERMISSIONS, PROJECT_SCOPED, SELF
from corral.engine.services import host_join
from corral.engine.services.auth import Principal, authenticate
from corral.errors import Forbidden, NotFound, Unauthorized
from corral.httpserve import bearer
from corral.peercert import client_certificate


def context(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.ctx
    return ctx


def principal(request: Request) -> Principal:
    """Who calls (a valid, unexpired token), once per request: ``authenticated`` and
    ``require`` share it."""
    who = authenticate(context(request), bearer(request))
    request.state.principal = who  # the audit log records who called (engine/audit.py)
    return who


def authenticated(who: Principal = Depends(principal)) -> str:
    """The caller's role; every route but health needs a valid token."""
    return who.role


ProjectQuery = Annotated[str | None, Query(
    max_length=63, description="The project to act in (default: `default`, or the one "
    "project the token is bound to); `*` on a list: every project the caller sees")]


def request_project(request: Request, who: Principal) -> str:
    """The project the request names (``?project=``), checked as a name; without one, the
    token's own project or ``default``."""
    named = request.query_params.get("project")
    if named is None or named == "":
        return who.access.only or DEFAULT_PROJECT
    return named if named == ALL_PROJECTS else projects.check_name(named, field="project")


def require(permission: str) -> Callable[..., Principal]:
    """The dependency a route declares its permission with (corral.engine.permissions):
    ``@router.post(..., dependencies=need("vm.create"))``. 401 without a valid token; 404
    for a project the caller has no role in (as if there were none: names do not leak);
    403 when its roles there lack the permission."""
    if permission != SELF and permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")  # a typo fails at import

    def check(request: Request, project: ProjectQuery = None,
              who: Principal = Depends(principal)) -> Principal:
        if permission in PROJECT_SCOPED:
            name = request_project(request, who)
            if name == ALL_PROJECTS:
                allowed = permission in who.access.anywhere()
            else:
                if not who.access.sees(name) or not projects.exists(context(request), name):
                    raise NotFound(f"project {name} not found", field="project")
                allowed = who.access.may(permission, name)
        else:
            allowed = who.access.may(permission, ALL_PROJECTS)
        if not allowed:
            raise Forbidden(f"{_who(who)} lacks permission {permission}"
                            + (f" in project {request_project(request, who)}"
                               if permission in PROJECT_SCOPED else ""),
                            permission=permission)
        return who

    check.permission = permission  # type: ignore[attr-defined]  # read by the route walker
    return check


def _who(who: Principal) -> str:
    return f"user {who.user}" if who.user else f"token {who.token_name}"


def current_project(request: Request, who: Principal = Depends(principal)) -> str:
    """The project a route acts in (its permission was checked there by ``require``)."""
    return request_project(request, who)


def caller(who: Principal = Depends(principal)) -> Principal:
    return who


def vm_name(name: str, project: str = Depends(current_project)) -> str:
    """The full name of the VM ``{name}`` of the request's project (engine/projects.py)."""
    return projects.full_name(project, name)


VmName = Annotated[str, Depends(vm_name)]
Project = Annotated[str, Depends(current_project)]


def need(permission: str) -> list[Any]:
    """``dependencies=need("vm.create")``: the one place a route says what it needs."""
    return [Depends(require(permission))]


def permission_of(dependency: Callable[..., Any]) -> str | None:
    """The permission a ``require`` dependency checks (None: not one)."""
    return getattr(dependency, "permission", None)


def declared_permissions(dependant: Any) -> list[str]:
    """Every permission a route's dependencies (and theirs) declare, in order: one, for a
    route as it should be (the audit log records it; test_permissions proves it)."""
    found: list[str] = []
    for dep in getattr(dependant, "dependencies", []):
        perm = permission_of(dep.call) if dep.call is not None else None
        if perm is not None:
            found.append(perm)
        found += declared_permissions(dep)
    return found


def reporting_host(request: Request) -> str:
    """The id of the host whose agent is calling: known by the client certificate it showed
    (mutual TLS), which must be the one its join gave it."""
    cert = client_certificate(request.scope)
    if cert is None:
        raise Unauthorized("agents report over mutual TLS: show the host's certificate")
    return host_join.host_by_certificate(context(request), cert)


def owned(model: type[Any], what: str) -> Callable[..., str]:
    """``Annotated[str, Depends(owned(Network, "network"))]``: the path's ``{name}`` of a
    network, image, security group or VM group must be of the request's project, or
    shared (to read or use); another
    project's is answered 404, as if it did not exist. A name that exists nowhere goes on
    to the service, which says so."""

    def check(request: Request, name: str, project: str = Depends(current_project)) -> str:
        with context(request).db.session() as s:
            row = s.query(model).filter_by(name=name).one_or_none()
            if row is None or row.project == project:
                return name
            if request.method == "GET" and getattr(row, "shared", False):
                return name
        raise NotFound(f"{what} {name} not found in project {project}", field="name")

    return check


def visible(items: list[Any], projects: list[str]) -> list[Any]:
    """Of a list's items (with ``project`` and maybe ``shared``), those of ``projects`` and
    the shared ones."""
    return [i for i in items if i.project in projects or getattr(i, "shared", False)]


def listed(permission: str) -> Callable[..., list[str]]:
    """``Depends(listed("vm.read"))``: the projects a list shows, the request's or (``?project=*``) every
    project where the caller holds ``permission``."""

    def projects_of(request: Request, who: Principal = Depends(principal)) -> list[str]:
        project = request_project(request, who)
        if project != ALL_PROJECTS:
            return [project]
        with context(request).db.session() as s:
            return who.access.projects_with(permission, project_names(s))

    return projects_of


def project_volume(request: Request, pool: str, name: str,
                   project: str = Depends(current_project)) -> str:
    """The path's volume ``{pool}/{name}`` must be of the request's project (else 404)."""
    with context(request).db.session() as s:
        row = s.query(Volume).join(StoragePool, Volume.pool_id == StoragePool.id) \
            .filter(StoragePool.name == pool, Volume.name == name).one_or_none()
        if row is None or row.project == project:
            return name
    raise NotFound(f"volume {pool}/{name} not found in project {project}", field="name")
