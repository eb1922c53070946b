"""API tokens and login sessions: random secrets shown once, stored as sha256 hashes.

A token belongs to a user (or, for the engine's own tokens, to nobody) and carries a role,
and maybe the one project it may act in; at each request what it may do is its role's
permissions capped by what its user may now do (engine/access.py), an expired token is
refused, and the last use is recorded at most once a minute (no write per request).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from corral.engine import access
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Token, User, utcnow
from corral.engine.permissions import check_role
from corral.errors import Conflict, NotFound, Unauthorized
from corral.httpserve import hash_token

SESSION_TTL = timedelta(hours=12)
_LAST_USE_EVERY = timedelta(minutes=1)
INVALID = "invalid, revoked or expired token (`corral login` for a new session)"


@dataclass(frozen=True)
class Principal:
    """Who calls: the user (None: an engine token without a user), the token's role, the
    token shown, and what the two allow project by project."""

    user: str | None
    role: str
    token_id: str
    token_name: str
    kind: str
    access: access.Access
    expires_at: datetime | None = None  # the token's, as read for this request


def _new_secret() -> str:
    return "crl_" + secrets.token_urlsafe(32)


def create_token(ctx: EngineContext, name: str, role: str = "admin", *, user: str | None = None,
                 kind: str = "api", expires_at: datetime | None = None,
                 replace: bool = True, project: str | None = None) -> str:
    """A new token's secret (shown once). ``user``: its owner, whose rights cap ``role``'s;
    ``project``: the one project it may act in; ``replace``: a token of that name and owner
    is replaced, else a Conflict."""
    secret = _new_secret()
    taken = f"a token named {name!r} exists; revoke it first"
    with claims.unique(taken, field="name"), ctx.db.session() as s:  # a concurrent create
        check_role(role, custom=access.role_sets(s))
        owner = _user(s, user) if user is not None else None
        uid = owner.id if owner is not None else None
        old = s.query(Token).filter_by(name=name, user_id=uid).one_or_none()
        if old is not None:
            if not replace:
                raise Conflict(taken, field="name")
            s.delete(old)
            s.flush()
        s.add(Token(name=name, secret_hash=hash_token(secret), role=role, user_id=uid,
                    kind=kind, expires_at=expires_at, project=project))
    return secret


def _user(s: Session, name: str) -> User:
    user = s.query(User).filter_by(name=name).one_or_none()
    if user is None:
        raise NotFound(f"user {name} not found", field="user")
    return user


def authenticate(ctx: EngineContext, secret: str) -> Principal:
    """Who the secret belongs to, or Unauthorized (unknown, revoked or expired: at once)."""
    now = utcnow()
    with ctx.db.session() as s:
        tok = s.query(Token).filter_by(secret_hash=hash_token(secret)).one_or_none()
        if tok is None or (tok.expires_at is not None and tok.expires_at <= now):
            raise Unauthorized(INVALID)
        owner = s.get(User, tok.user_id) if tok.user_id is not None else None
        if tok.user_id is not None and owner is None:
            raise Unauthorized(INVALID)
        if tok.last_used_at is None or now - tok.last_used_at >= _LAST_USE_EVERY:
            tok.last_used_at = now
        # a session shows its user's role now; an API token, its own (the most it may do)
        shown = owner.role if owner is not None and tok.kind == "session" else tok.role
        return Principal(user=owner.name if owner else None, role=shown, token_id=tok.id,
                         token_name=tok.name, kind=tok.kind,
                         access=access.of_user(s, owner, tok), expires_at=tok.expires_at)


def user_access(ctx: EngineContext, user: str) -> access.Access:
    """All a user may do, project by project (no token's cap)."""
    with ctx.db.session() as s:
        return access.of_user(s, _user(s, user))


def check_token(ctx: EngineContext, secret: str) -> str:
    """The token's role, or Unauthorized."""
    return authenticate(ctx, secret).role


def start_session(ctx: EngineContext, user: str, ttl: timedelta = SESSION_TTL) -> tuple[str, datetime]:
    """A login's token and when it expires. It may do what its user may, on each project
    (engine/access.py); its role is only shown."""
    with ctx.db.session() as s:
        role = _user(s, user).role
    expires = utcnow() + ttl
    name = "session-" + secrets.token_hex(4)
    return create_token(ctx, name, role, user=user, kind="session", expires_at=expires,
                        replace=False), expires


def keep_session(ctx: EngineContext, who: Principal, idle: timedelta, most: timedelta) -> None:
    """A session in use: it now expires ``idle`` from now, but never later than ``most``
    after its login (the web UI's sliding idle timeout). Written at most once a minute
    (the expiry moves when it is more than a minute behind), so not a write a request."""
    if who.kind != "session" or who.expires_at is None:
        return
    now = utcnow()
    if who.expires_at <= now or who.expires_at >= now + idle - _LAST_USE_EVERY:
        return
    with ctx.db.session() as s:
        tok = s.get(Token, who.token_id)
        if tok is not None and tok.expires_at is not None and tok.expires_at > now:
            tok.expires_at = max(tok.expires_at, min(now + idle, tok.created_at + most))


def revoke(ctx: EngineContext, token_id: str) -> None:
    with ctx.db.session() as s:
        tok = s.get(Token, token_id)
        if tok is not None:
            s.delete(tok)


def list_tokens(ctx: EngineContext, user: str) -> list[Token]:
    with ctx.db.session() as s:
        uid = _user(s, user).id
        return list(s.query(Token).filter_by(user_id=uid).order_by(Token.created_at).all())


def revoke_named(ctx: EngineContext, user: str, name: str) -> None:
    with ctx.db.session() as s:
        uid = _user(s, user).id
        tok = s.query(Token).filter_by(user_id=uid, name=name).one_or_none()
        if tok is None:
            raise NotFound(f"token {name} of user {user} not found", field="name")
        s.delete(tok)

