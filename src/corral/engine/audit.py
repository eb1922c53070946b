"""Recording the audit log: an ASGI middleware around the API (services/audit.py keeps it).

Every mutating request (POST, PUT, PATCH, DELETE) under /api/v1 (and the web UI's form
posts, engine/ui: the project is the acted-on VM's) is recorded once the engine
has decided its answer and before the client gets it, refusals (401, 403, 4xx) included:
who (the token's user, or the name a login tried), the token's name, the client's
address, ``?project=``, the action (the permission the route declares; the route's name for
logins, logouts and a caller's own tokens), the path, the status and the error code. Agents'
reports (every second from every host) are not: they would flood the log. Request bodies
are never read here, and of an answer only an error's code is kept.

What the route learnt of its caller reaches here through the request's state
(``request.state.principal``, set by routes/deps.py; ``request.state.login_user``, set by
the login route), the matched route through ``scope["route"]``.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.engine.permissions import SELF
from corral.engine.routes.deps import declared_permissions
from corral.engine.services import audit as audit_service

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API = "/api/v1/"
UNAUDITED = ("/api/v1/agent/",)  # heartbeats: not user actions, and once a second per host
_ERROR_BODY_MAX = 64 << 10  # enough for any error body; a larger answer is not read


def audited(method: str, path: str) -> bool:
    if method not in MUTATING:
        return False
    if path.startswith(API):
        return not path.startswith(UNAUDITED)
    return not path.startswith("/api/")  # the web UI's forms (engine/ui): logins, actions


def action_of(scope: Scope) -> str:
    route = scope.get("route")
    if not isinstance(route, APIRoute) or scope["method"] not in (route.methods or ()):
        return "unknown"  # no such path or method (a 404 or 405)
    perms = declared_permissions(route.dependant)
    return route.name if not perms or perms[0] == SELF else perms[0]


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def entry_of(scope: Scope, status: int, error: str | None) -> audit_service.Entry:
    state: dict[str, Any] = scope.get("state", {})
    who = state.get("principal")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    # as routes/deps.py reads it: the one named, else the token's own project, else default
    project = ((query.get("project") or [""])[0] or state.get("audit_project")  # web UI's
               or getattr(getattr(who, "access", None), "only", None) or "default")
    client = scope.get("client")
    return audit_service.Entry(
        user=who.user if who is not None else state.get("login_user"),
        token_name=who.token_name if who is not None else None,
        client=client[0] if client else None, project=str(project),
        action=action_of(scope), target=scope["path"], status=status, error=error)


class AuditLog:
    """ASGI middleware: see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not audited(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # the dict request.state writes into
        status = 0
        held: list[Message] = []  # an error answer, until its code is read
        size = 0
        recorded = False

        async def record(error: str | None) -> None:
            nonlocal recorded
            recorded = True
            ctx = scope["app"].state.ctx
            entry = entry_of(scope, status, error)
            try:
                await anyio.to_thread.run_sync(audit_service.append, ctx, entry)
            except Exception:  # the answer still goes out; the log says why it is missing
                log.exception("audit: could not record %s %s", scope["method"], scope["path"])

        async def release(error: str | None) -> None:
            await record(error)
            for message in held:
                await send(message)
            held.clear()

        async def sending(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status < 400:
                    await record(None)
                    await send(message)
                else:
                    held.append(message)
                return
            if held and message["type"] == "http.response.body":
                held.append(message)
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    await release(_error_code(b"".join(m.get("body", b"") for m in held[1:])))
                elif size > _ERROR_BODY_MAX:
                    await release(None)
                return
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if not recorded:  # a bug: the server's error handler answers 500
                status = 500
                held.clear()
                await record("internal")
            raise
        if held:  # the answer ended without its last body part
            await release(None)
