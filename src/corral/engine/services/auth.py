"""API tokens: random secrets shown once, stored as sha256 hashes."""

from __future__ import annotations

import secrets

from corral.engine.context import EngineContext
from corral.engine.db.models import Token
from corral.errors import Unauthorized
from corral.httpserve import hash_token


def create_token(ctx: EngineContext, name: str, role: str = "admin") -> str:
    secret = "crl_" + secrets.token_urlsafe(32)
    with ctx.db.session() as s:
        old = s.query(Token).filter_by(name=name).one_or_none()
        if old is not None:
            s.delete(old)
            s.flush()
        s.add(Token(name=name, secret_hash=hash_token(secret), role=role))
    return secret


def check_token(ctx: EngineContext, secret: str) -> str:
    """The token's role, or Unauthorized."""
    with ctx.db.session() as s:
        tok = s.query(Token).filter_by(secret_hash=hash_token(secret)).one_or_none()
        if tok is None:
            raise Unauthorized("invalid API token")
        return tok.role
