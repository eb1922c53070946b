"""Dependencies shared by the routes: the engine context and the bearer-token check."""

from __future__ import annotations

from fastapi import Request

from corral.engine.context import EngineContext
from corral.engine.services import host_join
from corral.engine.services.auth import check_token
from corral.errors import Unauthorized
from corral.httpserve import bearer
from corral.peercert import client_certificate


def context(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.ctx
    return ctx


def authenticated(request: Request) -> str:
    """The caller's role; every route but health needs a valid token."""
    return check_token(context(request), bearer(request))


def reporting_host(request: Request) -> str:
    """The id of the host whose agent is calling: known by the client certificate it showed
    (mutual TLS), which must be the one its join gave it."""
    cert = client_certificate(request.scope)
    if cert is None:
        raise Unauthorized("agents report over mutual TLS: show the host's certificate")
    return host_join.host_by_certificate(context(request), cert)
