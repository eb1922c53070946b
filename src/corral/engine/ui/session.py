"""The web UI's login session and CSRF tokens.

A login is a session token of the API (services/auth.py, kind ``session``): its secret
travels only in the ``corral_session`` cookie (HttpOnly, Secure, SameSite=Strict), its
expiry is the token's own in the database (so logout and expiry hold on the server, not in
the browser): IDLE after its last use, TTL after the login at most. At each request what
it may do is its user's access now, as for the API.

Every unsafe request (POST, PUT, PATCH, DELETE) also carries a CSRF token, in the form's
``csrf`` field or htmx's ``X-CSRF-Token`` header. For a session it is derived from the
session's secret (an HMAC: nothing to store, and it reveals nothing of the secret); before
login, the login form's token is a random value doubled in a cookie of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response

from corral.engine.context import EngineContext
from corral.engine.services.auth import Principal, authenticate, keep_session
from corral.errors import Unauthorized

SESSION_COOKIE = "corral_session"
LOGIN_CSRF_COOKIE = "corral_login_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
TTL = timedelta(hours=8)  # a working day at most; the token's expires_at is what counts
# Idle: a session unused this long has expired (its expires_at is moved by each use, up to
# TTL after the login). The requests a page makes by itself (header BACKGROUND: the live
# rows, operation and graph polls, the event stream) do not count as use.
IDLE = timedelta(minutes=30)
BACKGROUND = "x-corral-background"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_MAX = 64 << 10  # our forms are small; the engine's body limit applies as well


@dataclass(frozen=True)
class Caller:
    """Who uses the UI: the API's principal, and this session's CSRF token."""

    who: Principal
    csrf: str


def csrf_of(secret: str) -> str:
    return hmac.new(secret.encode(), b"corral web UI CSRF", hashlib.sha256).hexdigest()


def caller(ctx: EngineContext, request: Request) -> Caller | None:
    """The logged-in caller (None: no cookie, or a session revoked or expired)."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    try:
        who = authenticate(ctx, secret)
    except Unauthorized:
        return None
    if who.kind != "session":
        return None  # API tokens go in an Authorization header, not in this cookie
    request.state.principal = who  # the audit log records who acted (engine/audit.py)
    if not background(request):
        keep_session(ctx, who, IDLE, TTL)
    return Caller(who=who, csrf=csrf_of(secret))


def background(request: Request) -> bool:
    """A request the page made by itself, not the user: it keeps no session alive."""
    return (BACKGROUND in request.headers
            or request.headers.get("accept", "").startswith("text/event-stream"))


async def form(request: Request) -> dict[str, str]:
    """The posted form (application/x-www-form-urlencoded; the first value of each field),
    read once per request."""
    cached: dict[str, str] | None = getattr(request.state, "ui_form", None)
    if cached is not None:
        return cached
    fields: dict[str, str] = {}
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/x-www-form-urlencoded":
        body = await request.body()
        if len(body) <= _FORM_MAX:
            parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            fields = {k: v[0] for k, v in parsed.items()}
    request.state.ui_form = fields
    return fields


async def csrf_sent(request: Request) -> str:
    """The CSRF token an unsafe request carries (header first, then the form's field)."""
    return request.headers.get(CSRF_HEADER) or (await form(request)).get(CSRF_FIELD, "")


def same(sent: str, expected: str) -> bool:
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="strict")


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")
