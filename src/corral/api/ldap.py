"""API types of LDAP / Active Directory logins (``/api/v1/auth/ldap``).

The service account's bind password is write-only: no answer carries it, only
``bind_password_set``. The group map gives a directory group (by DN) a role on a project
or on all (``*``); a directory user gets the roles of its groups at each login.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from corral.api.models import _Request
from corral.errors import InvalidInput

__all__ = ["DEFAULT_GROUP_ATTRIBUTE", "DEFAULT_GROUP_FILTER", "DEFAULT_USER_FILTER",
           "GroupMapping", "LdapConfig", "LdapSet", "LdapTest", "LdapTestResult",
           "normalize_dn", "parse_group_mapping"]

DN_MAX = 512
FILTER_MAX = 512
DEFAULT_USER_FILTER = "(uid={username})"  # Active Directory: (sAMAccountName={username})
# Groups that list the user's DN (groupOfNames, groupOfUniqueNames, AD groups); the user's
# own memberOf (AD, OpenLDAP's memberof overlay) is read too.
DEFAULT_GROUP_FILTER = "(|(member={dn})(uniqueMember={dn}))"
DEFAULT_GROUP_ATTRIBUTE = "memberOf"
_URL = re.compile(r"^ldaps?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?/?$")
_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]*$"  # a role or project name (api.models.Name)
_NAME = re.compile(_NAME_PATTERN)

Dn = Annotated[str, Field(min_length=1, max_length=DN_MAX, description="e.g. dc=example,dc=org")]


def normalize_dn(dn: str) -> str:
    """A DN as compared: attribute types and values lowercased, spaces around them dropped
    (directories match cn, ou and dc case-insensitively)."""
    from ldap3.utils.dn import parse_dn  # ldap3 loads only where LDAP is used (CLI start)

    return "".join(f"{a.lower()}={v.lower()}{sep}" for a, v, sep in parse_dn(dn, strip=True))


def check_dn(dn: str) -> str:
    from ldap3.core.exceptions import LDAPInvalidDnError
    from ldap3.utils.dn import parse_dn

    try:
        parse_dn(dn, strip=True)
    except LDAPInvalidDnError as exc:
        raise ValueError(f"{dn!r} is not a distinguished name ({exc})") from None
    return dn


def check_filter(text: str, placeholder: str) -> str:
    """An LDAP filter with its ``{placeholder}``, which the engine fills in escaped."""
    from ldap3.core.exceptions import LDAPInvalidFilterError
    from ldap3.operation.search import parse_filter

    if placeholder not in text:
        raise ValueError(f"the filter must hold {placeholder}, where the engine puts the "
                         "(escaped) value, e.g. (uid={username})")
    try:
        parse_filter(text.replace(placeholder, "x"), None, True, True, None, False)
    except LDAPInvalidFilterError:
        raise ValueError(f"{text!r} is not an LDAP filter (parenthesized, as "
                         "(&(objectClass=person)(uid={username})))") from None
    return text


class GroupMapping(_Request):
    """Members of ``group`` get ``role`` on ``project`` (``*``: every project)."""

    group: Dn
    role: Annotated[str, Field(min_length=1, max_length=63, pattern=_NAME_PATTERN)]
    project: Annotated[str, Field(min_length=1, max_length=63,
                                  pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_-]*)$")] = "*"

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        return check_dn(v)


def parse_group_mapping(text: str, field: str = "group_map") -> GroupMapping:
    """``GROUP_DN=ROLE@PROJECT`` (split at the last ``=``: a DN holds ``=`` itself), e.g.
    ``cn=vmadmins,ou=groups,dc=example,dc=org=admin@*``; no ``@PROJECT``: every project."""
    group, eq, grant = text.rpartition("=")
    role, _, project = grant.partition("@")
    if not eq or not group or not role or "=" not in group:
        raise InvalidInput(f"{text!r}: GROUP_DN=ROLE@PROJECT, e.g. "
                           "cn=vmadmins,ou=groups,dc=example,dc=org=admin@*", field=field)
    if not _NAME.match(role) or not (project in ("", "*") or _NAME.match(project)):
        raise InvalidInput(f"{text!r}: ROLE@PROJECT names a role and a project (or *)",
                           field=field)
    try:
        return GroupMapping(group=group, role=role, project=project or "*")
    except ValueError as exc:
        raise InvalidInput(f"{text!r}: {exc}", field=field) from None


class LdapSet(_Request):
    """The whole configuration (a PUT replaces it)."""

    url: Annotated[str, Field(min_length=1, max_length=255,
                              description="ldap://HOST[:PORT] or ldaps://HOST[:PORT]")]
    bind_dn: Dn = Field(description="The service account that searches for users")
    bind_password: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        None, description="Write-only; none: keep the one set before")
    base_dn: Dn = Field(description="Where users and groups are searched (subtree)")
    user_filter: Annotated[str, Field(min_length=3, max_length=FILTER_MAX)] = DEFAULT_USER_FILTER
    group_filter: Annotated[str, Field(min_length=3, max_length=FILTER_MAX)] | None = Field(
        DEFAULT_GROUP_FILTER, description="Groups that hold the user ({dn}); none: only the "
        "user's group attribute")
    group_attribute: Annotated[str, Field(min_length=1, max_length=63)] | None = Field(
        DEFAULT_GROUP_ATTRIBUTE, description="The user's attribute that lists its groups; "
        "none: only the group search")
    group_map: list[GroupMapping] = Field(default_factory=list, max_length=200)
    timeout_s: float = Field(5.0, ge=0.5, le=60, description="Connect and answer timeout")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not _URL.match(v):
            raise ValueError(f"{v!r}: ldap://HOST[:PORT] or ldaps://HOST[:PORT] (no path, "
                             "no credentials)")
        port = v.rstrip("/").rsplit(":", 1)[-1]
        if port.isdigit() and not 1 <= int(port) <= 65535:
            raise ValueError(f"{v!r}: the port is 1-65535")
        return v.rstrip("/")

    @field_validator("bind_dn", "base_dn")
    @classmethod
    def _dn(cls, v: str) -> str:
        return check_dn(v)

    @field_validator("user_filter")
    @classmethod
    def _user_filter(cls, v: str) -> str:
        return check_filter(v, "{username}")

    @field_validator("group_filter")
    @classmethod
    def _group_filter(cls, v: str | None) -> str | None:
        return None if v is None else check_filter(v, "{dn}")

    @field_validator("group_attribute")
    @classmethod
    def _group_attribute(cls, v: str | None) -> str | None:
        if v is not None and not _ATTRIBUTE.match(v):
            raise ValueError(f"{v!r} is not an attribute name (e.g. memberOf)")
        return v


class LdapConfig(BaseModel):
    """What is set; never the bind password."""

    url: str
    bind_dn: str
    bind_password_set: bool
    base_dn: str
    user_filter: str
    group_filter: str | None
    group_attribute: str | None
    group_map: list[GroupMapping]
    timeout_s: float
    updated_at: datetime


class LdapTest(_Request):
    username: Annotated[str, Field(min_length=1, max_length=63)] | None = Field(
        None, description="A user to look up (its password is not needed); none: only the "
        "service account's bind")


class LdapTestResult(BaseModel):
    url: str
    bind_dn: str
    message: str
    user: str | None = None
    user_dn: str | None = Field(None, description="None: no such user in the directory")
    groups: list[str] = Field(default_factory=list, description="The user's group DNs")
    grants: list[GroupMapping] = Field(default_factory=list,
                                       description="What the group map gives those groups")
    role: str | None = Field(None, description="The role a login would get; none: refused")
