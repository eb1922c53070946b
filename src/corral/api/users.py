"""API types of users, logins and API tokens (``/api/v1/users``, ``/login``, ``/tokens``).

No type here carries a password hash or a token's hash: what the engine keeps of secrets
never leaves it. A password or a token's secret is in a body only when sent (write-only) or,
for a new token, in the one answer that creates it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field

from corral.api.models import _Request
from corral.errors import InvalidInput

__all__ = ["LoginAnswer", "LoginRequest", "PasswordSet", "Role", "TokenCreate", "TokenCreated",
           "TokenInfo", "UserCreate", "UserInfo", "UserPatch", "Whoami", "parse_duration"]

USER_PATTERN = "^[a-z_][a-z0-9._-]*$"
UserName = Annotated[str, Field(min_length=1, max_length=63, pattern=USER_PATTERN)]
TokenName = Annotated[str, Field(min_length=1, max_length=63,
                                 pattern="^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
TEN_YEARS_S = 10 * 365 * 86400
RoleName = Annotated[str, Field(min_length=1, max_length=63, pattern="^[A-Za-z0-9][A-Za-z0-9_-]*$",
                                description="A built-in role (none, viewer, user, operator, "
                                "admin) or a custom one")]
ProjectName = Annotated[str, Field(min_length=1, max_length=63,
                                   pattern="^[A-Za-z0-9][A-Za-z0-9_-]*$")]


class Role(StrEnum):
    """Built-in roles, least to most: each holds every permission of the one before.
    Custom roles (`corral role create`) are named like any resource."""

    NONE = "none"  # a user's global role when only its role assignments give it rights
    VIEWER = "viewer"  # reads everything but users
    USER = "user"  # VMs, volumes, snapshots, consoles; networks to attach
    OPERATOR = "operator"  # everything but users and hosts (which it reads)
    ADMIN = "admin"  # everything


class UserCreate(_Request):
    name: UserName
    role: RoleName = Field("user", description="Its role on every project (`none`: only what "
                           "role assignments give it)")
    password: Password | None = Field(None, description="Write-only; none: API tokens only, "
                                      "until `corral user passwd` sets one")


class UserPatch(_Request):
    role: RoleName | None = None


class UserInfo(BaseModel):
    name: str
    role: str
    source: str = Field("local", description="local, or ldap (a directory user)")
    has_password: bool
    created_at: datetime


class PasswordSet(_Request):
    password: Password
    current_password: Password | None = Field(
        None, description="The caller's own password: needed to change it (PUT /password)")


class LoginRequest(_Request):
    username: Annotated[str, Field(min_length=1, max_length=63)]
    password: Password


class LoginAnswer(BaseModel):
    token: str = Field(description="A session token: send it as Authorization: Bearer")
    expires_at: datetime
    user: str
    role: str


class Whoami(BaseModel):
    user: str | None = Field(description="None: an engine token that belongs to no user")
    role: str = Field(description="The token's role: the most it may do; the user's own "
                      "rights cap it on each project")
    token_name: str
    kind: str = Field(description="api or session")
    project: str | None = Field(None, description="The one project the token may act in")
    permissions: list[str] = Field(description="Everything it may do on some project")
    projects: dict[str, list[str]] = Field(
        default_factory=dict, description="Project (or * for all) -> the roles held there")


class TokenCreate(_Request):
    name: TokenName
    role: RoleName | None = Field(None, description="A role whose permissions the caller "
                                  "holds; none: all the user may (the user's rights cap it)")
    project: ProjectName | None = Field(None, description="The one project it may act in")
    expires_in_s: int | None = Field(None, ge=1, le=TEN_YEARS_S,
                                     description="None: never expires")


class TokenInfo(BaseModel):
    name: str
    role: str
    project: str | None = None
    kind: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenInfo):
    token: str = Field(description="The secret, shown this once")


def parse_duration(text: str, field: str = "expires") -> int:
    """Seconds of ``30d``, ``12h``, ``90m``, ``2w`` or ``3600s`` (a bare number: seconds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    raw = text.strip().lower()
    unit = raw[-1] if raw and raw[-1] in units else "s"
    number = raw[:-1] if raw and raw[-1] in units else raw
    if not number.isdigit() or int(number) <= 0:
        raise InvalidInput(f"{text!r}: a duration such as 30d, 12h, 90m or 3600s", field=field)
    seconds = int(number) * units[unit]
    if seconds > TEN_YEARS_S:
        raise InvalidInput(f"{text!r}: at most ten years", field=field)
    return seconds
