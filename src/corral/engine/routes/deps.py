"""Dependencies shared by the routes: the engine context and the bearer-token check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request

from corral.engine.context import EngineContext
from corral.engine.permissions import PERMISSIONS, SELF, allowed
from corral.engine.services import host_join
from corral.engine.services.auth import Principal, authenticate
from corral.errors import Forbidden, Unauthorized
from corral.httpserve import bearer
from corral.peercert import client_certificate


def context(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.ctx
    return ctx


def principal(request: Request) -> Principal:
    """Who calls (a valid, unexpired token), once per request: ``authenticated`` and
    ``require`` share it."""
    return authenticate(context(request), bearer(request))


def authenticated(who: Principal = Depends(principal)) -> str:
    """The caller's role; every route but health needs a valid token."""
    return who.role


def require(permission: str) -> Callable[..., Principal]:
    """The dependency a route declares its permission with (corral.engine.permissions):
    ``@router.post(..., dependencies=need("vm.create"))``. 401 without a valid token, 403
    when the caller's role lacks the permission."""
    if permission != SELF and permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")  # a typo fails at import

    def check(who: Principal = Depends(principal)) -> Principal:
        if not allowed(who.role, permission):
            raise Forbidden(f"role {who.role} lacks permission {permission}",
                            permission=permission)
        return who

    check.permission = permission  # type: ignore[attr-defined]  # read by the route walker
    return check


def need(permission: str) -> list[Any]:
    """``dependencies=need("vm.create")``: the one place a route says what it needs."""
    return [Depends(require(permission))]


def permission_of(dependency: Callable[..., Any]) -> str | None:
    """The permission a ``require`` dependency checks (None: not one)."""
    return getattr(dependency, "permission", None)


def reporting_host(request: Request) -> str:
    """The id of the host whose agent is calling: known by the client certificate it showed
    (mutual TLS), which must be the one its join gave it."""
    cert = client_certificate(request.scope)
    if cert is None:
        raise Unauthorized("agents report over mutual TLS: show the host's certificate")
    return host_join.host_by_certificate(context(request), cert)
