"""Local users: names, roles and argon2id password hashes (never returned by the API)."""

from __future__ import annotations

import re
import secrets

from sqlalchemy.orm import Session

from corral.api.users import UserInfo
from corral.engine import access
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import RoleAssignment, Token, User
from corral.engine.permissions import check_role
from corral.engine.services import passwords
from corral.errors import Conflict, InvalidInput, NotFound

_NAME = re.compile(r"^[a-z_][a-z0-9._-]{0,62}$")
ADMIN = "admin"  # made by `corral up`; never locked out from the host's own console


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"user name {name!r}: lowercase letters, digits, '.', '_', '-' (at "
                           "most 63), starting with a letter or '_'", field="name")
    return name


def _info(u: User) -> UserInfo:
    return UserInfo(name=u.name, role=u.role, source=u.source,
                    has_password=u.password_hash is not None, created_at=u.created_at)


def _get(s: Session, name: str) -> User:
    user = s.query(User).filter_by(name=name).one_or_none()
    if user is None:
        raise NotFound(f"user {name} not found", field="name")
    return user


def create(ctx: EngineContext, name: str, role: str, password: str | None) -> UserInfo:
    check_name(name)
    with ctx.db.session() as s:
        check_role(role, custom=access.role_sets(s))
    if password is not None:
        passwords.check_strength(password)
    pw_hash = passwords.hash_password(password) if password is not None else None
    with claims.unique(f"user {name} exists", field="name"), ctx.db.session() as s:
        if s.query(User).filter_by(name=name).one_or_none() is not None:
            raise Conflict(f"user {name} exists", field="name")
        user = User(name=name, role=role, password_hash=pw_hash)
        s.add(user)
        s.flush()
        return _info(user)


def list_users(ctx: EngineContext) -> list[UserInfo]:
    with ctx.db.session() as s:
        return [_info(u) for u in s.query(User).order_by(User.name).all()]


def get(ctx: EngineContext, name: str) -> UserInfo:
    with ctx.db.session() as s:
        return _info(_get(s, name))


def update(ctx: EngineContext, name: str, role: str | None) -> UserInfo:
    """A new role takes effect at once for every token of the user (capped at each request)."""
    with ctx.db.session() as s:
        user = _get(s, name)
        if role is not None:
            user.role = check_role(role, custom=access.role_sets(s))
        return _info(user)


def delete(ctx: EngineContext, name: str) -> None:
    """The user and all its tokens; refused for the last admin (nobody could manage users)."""
    with ctx.db.session() as s:
        user = _get(s, name)
        if user.role == "admin" and s.query(User).filter_by(role="admin").count() == 1:
            raise Conflict(f"{name} is the last admin; make another admin first", field="name")
        s.query(Token).filter_by(user_id=user.id).delete()
        s.query(RoleAssignment).filter_by(subject_kind="user", subject=name).delete()
        s.delete(user)


def set_password(ctx: EngineContext, name: str, password: str) -> None:
    """A new password; the user's login sessions end (its API tokens stay)."""
    passwords.check_strength(password)
    pw_hash = passwords.hash_password(password)
    with ctx.db.session() as s:
        user = _get(s, name)
        if user.source != "local":  # a second, local password would bypass the directory
            raise InvalidInput(f"{name} is a directory (LDAP) user: its password is the "
                               "directory's", field="name")
        user.password_hash = pw_hash
        s.query(Token).filter_by(user_id=user.id, kind="session").delete()


def check_password(ctx: EngineContext, name: str, password: str) -> bool:
    """Whether the name and password match: as long for an unknown user as for a known one."""
    with ctx.db.session() as s:
        user = s.query(User).filter_by(name=name).one_or_none()
        pw_hash = user.password_hash if user is not None else None
    return passwords.verify(pw_hash, password)


def ensure_admin(ctx: EngineContext, password: str | None = None) -> str | None:
    """The ``admin`` user, made on the engine's first start (and on the first start after an
    upgrade), with ``password`` or a random one; the engine's unowned ``admin`` token becomes
    its. The password when one was made here (to be shown once), else None."""
    with ctx.db.session() as s:
        if s.query(User).filter_by(name=ADMIN).one_or_none() is not None:
            return None
    made = password is None
    pw = password if password is not None else secrets.token_urlsafe(18)
    passwords.check_strength(pw, field="admin_password")
    pw_hash = passwords.hash_password(pw)
    with ctx.db.session() as s:
        if s.query(User).filter_by(name=ADMIN).one_or_none() is not None:
            return None  # another start won the race
        user = User(name=ADMIN, role="admin", password_hash=pw_hash)
        s.add(user)
        s.flush()
        s.query(Token).filter_by(name=ADMIN, user_id=None).update({"user_id": user.id})
    return pw if made else None
