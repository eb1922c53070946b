"""Checking a user's name and password: a local password user's, else the directory's
(LDAP, when set). The API's login (routes/users.py) and the web UI's (engine/ui) both go
through here, so both are slowed down and locked alike by the login guard."""

from __future__ import annotations

from corral.engine.context import EngineContext
from corral.engine.services import ldap_auth, users
from corral.engine.services.login_guard import guard_of
from corral.errors import Unauthorized

WRONG = "wrong user name or password"  # the same for an unknown user: names do not leak


def check(ctx: EngineContext, username: str, password: str, address: str | None) -> str:
    """The name of the user the password proves (Unauthorized otherwise). Failures are
    slowed down per user and per client address, then locked for a while (429)."""
    guard = guard_of(ctx)
    guard.attempt(username, address)
    name = username
    if not users.check_password(ctx, username, password):
        # not a local password user: the directory's, when LDAP is set (403 without a
        # mapped group, 503 when the directory does not answer)
        name = ldap_auth.login(ctx, username, password) or ""
        if not name:
            raise Unauthorized(WRONG)
    guard.succeeded(username, address)
    return name
