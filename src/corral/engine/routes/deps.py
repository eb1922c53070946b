"""Dependencies shared by the routes: the engine context and the bearer-token check."""

from __future__ import annotations

from fastapi import Request

from corral.engine.context import EngineContext
from corral.engine.services.auth import check_token
from corral.httpserve import bearer


def context(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.ctx
    return ctx


def authenticated(request: Request) -> str:
    """The caller's role; every route but health needs a valid token."""
    return check_token(context(request), bearer(request))
