"""LDAP / Active Directory logins (ldap3): the directory says who the user is and which
groups it is in; the group map says what those groups may do in corral.

A login: bind as the service account, search the user (the name escaped into the user
filter), bind as the user's DN with the password given, read its groups (the user's
``memberOf`` and a search for the groups that list its DN), map them. The user's row
(``source`` ldap, no password hash) gets its groups, its grants and its role again at each
login, so a group change takes effect at the next login.

Errors: a wrong password or an unknown user is the caller's 401, the same as for local
users (no way to tell them apart); a directory that does not answer is a 503 naming it
(local users still log in: they never reach here); a directory that answers with an error
(the service account refused, a bad base DN) is a 502.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.api.ldap import GroupMapping, LdapConfig, LdapSet, LdapTestResult, normalize_dn
from corral.engine import access
from corral.engine.context import EngineContext
from corral.engine.db.models import LdapSettings, RoleAssignment, Token, User, utcnow
from corral.engine.permissions import ALL_PROJECTS, ROLE_NAMES, ROLES
from corral.engine.services.users import check_name
from corral.errors import Forbidden, HostError, InvalidInput, NotFound, Unavailable

log = logging.getLogger(__name__)

SOURCE = "ldap"
NO_ROLE = "no role: none of your directory groups is mapped"
NOT_SET = "LDAP is not configured (`corral auth ldap set --url ...`)"
MAX_GROUPS = 1000  # groups read per user: enough for anyone, bounded for a loop
NONE = "none"  # the built-in role that holds nothing (engine/permissions.py)


@dataclass(frozen=True)
class _Conf:
    """A copy of the settings row, to use outside the DB session."""

    url: str
    bind_dn: str
    bind_password: str
    base_dn: str
    user_filter: str
    group_filter: str | None
    group_attribute: str | None
    group_map: tuple[GroupMapping, ...]
    timeout_s: float


@dataclass(frozen=True)
class DirectoryUser:
    dn: str
    groups: tuple[str, ...]  # DNs, as the directory spells them


if TYPE_CHECKING:
    import ldap3


def _ldap() -> Any:
    """ldap3, loaded on the first directory call: an engine without LDAP never loads it."""
    import ldap3
    import ldap3.utils.conv

    return ldap3


def _ldap_error() -> type[Exception]:
    from ldap3.core.exceptions import LDAPException

    error: type[Exception] = LDAPException
    return error


# -- the settings ---------------------------------------------------------------------------

def _conf(ctx: EngineContext) -> _Conf | None:
    with ctx.db.session() as s:
        row = s.get(LdapSettings, 1)
        if row is None:
            return None
        return _Conf(url=row.url, bind_dn=row.bind_dn, bind_password=row.bind_password,
                     base_dn=row.base_dn, user_filter=row.user_filter,
                     group_filter=row.group_filter, group_attribute=row.group_attribute,
                     group_map=tuple(GroupMapping.model_validate(m) for m in row.group_map),
                     timeout_s=row.timeout_s)


def _config_of(row: LdapSettings) -> LdapConfig:
    return LdapConfig(url=row.url, bind_dn=row.bind_dn, bind_password_set=bool(row.bind_password),
                      base_dn=row.base_dn, user_filter=row.user_filter,
                      group_filter=row.group_filter, group_attribute=row.group_attribute,
                      group_map=[GroupMapping.model_validate(m) for m in row.group_map],
                      timeout_s=row.timeout_s, updated_at=row.updated_at)


def get_config(ctx: EngineContext) -> LdapConfig:
    with ctx.db.session() as s:
        row = s.get(LdapSettings, 1)
        if row is None:
            raise NotFound(NOT_SET)
        return _config_of(row)


def set_config(ctx: EngineContext, req: LdapSet) -> LdapConfig:
    """Replace the configuration; the bind password is kept when none is sent."""
    with ctx.db.session() as s:
        roles = access.role_sets(s)
        for i, m in enumerate(req.group_map):
            if m.role not in roles:
                raise InvalidInput(f"group_map: role {m.role!r} does not exist (built-in: "
                                   f"{', '.join(ROLE_NAMES)}; or `corral role create`)",
                                   field=f"group_map.{i}.role")
        row = s.get(LdapSettings, 1)
        password = req.bind_password or (row.bind_password if row is not None else None)
        if password is None:
            raise InvalidInput("the service account's bind password is needed the first time "
                               "(--bind-password-file)", field="bind_password")
        if row is None:
            row = LdapSettings(id=1)
            s.add(row)
        row.url, row.bind_dn, row.bind_password = req.url, req.bind_dn, password
        row.base_dn, row.user_filter = req.base_dn, req.user_filter
        row.group_filter, row.group_attribute = req.group_filter, req.group_attribute
        row.group_map = [m.model_dump() for m in req.group_map]
        row.timeout_s, row.updated_at = req.timeout_s, utcnow()
        s.flush()
        return _config_of(row)


def unset(ctx: EngineContext) -> None:
    """LDAP off: directory users cannot log in any more (their tokens stay until they expire
    or are revoked; their rows stay, with the role of their last login)."""
    with ctx.db.session() as s:
        row = s.get(LdapSettings, 1)
        if row is not None:
            s.delete(row)


# -- the directory --------------------------------------------------------------------------

def _unreachable(conf: _Conf, exc: BaseException) -> Unavailable:
    return Unavailable(f"LDAP server {conf.url} unreachable: {exc}", url=conf.url)


def _close(conn: ldap3.Connection) -> None:
    with contextlib.suppress(_ldap_error()):  # the server went meanwhile: nothing to close
        conn.unbind()


def _connect(conf: _Conf, dn: str, password: str, *, service: bool) -> ldap3.Connection | None:
    """A connection bound as ``dn``; None when the directory refuses the credentials (any
    refusal of a user: a disabled account or an expired password is the user's 401 too)."""
    tls = _ldap().Tls(validate=ssl.CERT_REQUIRED)  # ldaps: the system's CAs, the host's name
    server = _ldap().Server(conf.url, connect_timeout=conf.timeout_s, get_info=_ldap().NONE, tls=tls)
    conn = _ldap().Connection(server, user=dn, password=password, read_only=True,
                            receive_timeout=math.ceil(conf.timeout_s),  # whole s (SO_RCVTIMEO)
                            auto_referrals=False,
                            raise_exceptions=False)
    try:
        if conn.bind():
            return conn
    except _ldap_error() as exc:
        raise _unreachable(conf, exc) from exc
    result: dict[str, Any] = conn.result or {}
    _close(conn)
    if not service or result.get("result") == 49:  # invalidCredentials: wrong password, no DN
        return None
    raise HostError(f"LDAP server {conf.url} refused the bind of {dn}: "
                    f"{result.get('description')} {result.get('message') or ''}".rstrip())


def _service(conf: _Conf) -> ldap3.Connection:
    conn = _connect(conf, conf.bind_dn, conf.bind_password, service=True)
    if conn is None:
        raise HostError(f"LDAP server {conf.url} refused the service account {conf.bind_dn}: "
                        "wrong bind password or no such DN (`corral auth ldap set`)")
    return conn


def _search(conf: _Conf, conn: ldap3.Connection, search_filter: str, attributes: Any,
            limit: int) -> list[dict[str, Any]]:
    """The entries found under the base DN (subtree), at most ``limit``."""
    try:
        conn.search(conf.base_dn, search_filter, search_scope=_ldap().SUBTREE,
                    attributes=attributes, size_limit=limit,
                    time_limit=max(1, int(conf.timeout_s)))
    except _ldap_error() as exc:
        raise _unreachable(conf, exc) from exc
    result: dict[str, Any] = conn.result or {}
    if result.get("result") not in (0, 4):  # success, sizeLimitExceeded
        raise HostError(f"LDAP search {search_filter} under {conf.base_dn} failed: "
                        f"{result.get('description')} {result.get('message') or ''}".rstrip())
    return [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]


def _find(conf: _Conf, conn: ldap3.Connection, username: str) -> DirectoryUser | None:
    """The one user the filter finds, with its groups; None: none (or, ambiguous, several)."""
    user_filter = conf.user_filter.replace("{username}", _ldap().utils.conv.escape_filter_chars(username))
    attrs = [conf.group_attribute] if conf.group_attribute else _ldap().NO_ATTRIBUTES
    found = _search(conf, conn, user_filter, attrs, 2)
    if len(found) != 1:
        if found:
            log.warning("LDAP filter %s matches several entries: login refused", user_filter)
        return None
    dn = str(found[0]["dn"])
    groups: list[str] = []
    if conf.group_attribute:
        values = found[0].get("attributes", {}).get(conf.group_attribute) or []
        groups += [str(v) for v in (values if isinstance(values, list) else [values])]
    if conf.group_filter:
        group_filter = conf.group_filter.replace("{dn}", _ldap().utils.conv.escape_filter_chars(dn))
        groups += [str(e["dn"]) for e in
                   _search(conf, conn, group_filter, _ldap().NO_ATTRIBUTES, MAX_GROUPS)]
    return DirectoryUser(dn=dn, groups=_unique_dns(groups[:MAX_GROUPS]))


def _unique_dns(dns: list[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for dn in dns:
        try:
            seen.setdefault(normalize_dn(dn), dn)
        except _ldap_error():
            log.warning("LDAP group %r is not a DN: ignored", dn)
    return tuple(sorted(seen.values(), key=str.lower))


def authenticate(conf: _Conf, username: str, password: str) -> DirectoryUser | None:
    """The user, when the directory takes the password; None: unknown user or wrong password."""
    if not password:  # an empty password is an anonymous bind, which many servers accept
        return None
    conn = _service(conf)
    try:
        user = _find(conf, conn, username)
    finally:
        _close(conn)
    if user is None:
        return None
    bound = _connect(conf, user.dn, password, service=False)
    if bound is None:
        return None
    _close(bound)
    return user


# -- groups to roles ------------------------------------------------------------------------

def grants_of(groups: tuple[str, ...] | list[str],
              group_map: tuple[GroupMapping, ...]) -> list[tuple[str, str]]:
    """(role, project) pairs the group map gives these groups, sorted, without repeats."""
    have = set()
    for g in groups:
        try:
            have.add(normalize_dn(g))
        except _ldap_error():
            continue
    return sorted({(m.role, m.project) for m in group_map if normalize_dn(m.group) in have})


def role_of(grants: list[tuple[str, str]]) -> str | None:
    """The user's global role: the highest built-in role granted on every project ('*');
    ``none`` when its grants are only per project or custom roles (engine/access.py reads
    those from ``users.grants``); None: no grant at all."""
    if not grants:
        return None
    everywhere = [r for r, p in grants if p == ALL_PROJECTS and r in ROLES]
    return max(everywhere, key=ROLE_NAMES.index) if everywhere else NONE


def _assigned(s: Session, name: str, groups: tuple[str, ...]) -> bool:
    """Whether `corral role assign` gave the user, or one of its groups, a role."""
    subjects = [("user", name)] + [("group", g) for g in groups]
    return any(s.query(RoleAssignment).filter_by(subject_kind=k, subject=v).count()
               for k, v in subjects)


def _sync(ctx: EngineContext, name: str, groups: tuple[str, ...],
          grants: list[tuple[str, str]]) -> bool:
    """Bring the directory user's row up to what this login found (made at its first
    login); whether it may log in: a grant of the group map, or a role assignment of its
    own or of one of its groups. One that may not keeps its row (if any) with no rights
    and loses its tokens."""
    for attempt in range(2):  # a concurrent first login of the same user inserts first
        try:
            with ctx.db.session() as s:
                allowed = bool(grants) or _assigned(s, name, groups)
                user = s.query(User).filter_by(name=name).one_or_none()
                if user is None:
                    if not allowed:
                        return False  # no row for someone who may do nothing
                    user = User(name=name, password_hash=None, source=SOURCE)
                    s.add(user)
                elif user.source != SOURCE:  # made local since login() looked
                    return False
                elif not allowed:
                    s.query(Token).filter_by(user_id=user.id).delete()
                user.role = role_of(grants) or NONE
                user.groups = list(groups)
                user.grants = [list(g) for g in grants]
            return allowed
        except IntegrityError:
            if attempt:
                raise
    return False


def login(ctx: EngineContext, username: str, password: str) -> str | None:
    """The corral user name of a directory login, its row brought up to date; None when the
    name is not a directory user's (LDAP off, a local user, unknown, wrong password).
    Forbidden when it holds no role (no group mapped, nothing assigned); Unavailable when
    the directory does not answer."""
    conf = _conf(ctx)
    if conf is None:
        return None
    name = username.lower()  # directories compare names case-insensitively; corral does not
    try:
        check_name(name)
    except InvalidInput:
        return None
    with ctx.db.session() as s:
        local = s.query(User).filter(User.name == name, User.source != SOURCE).count()
    if local:  # never the directory's: a local user keeps its own password only
        return None
    user = authenticate(conf, name, password)
    if user is None:
        return None
    if not _sync(ctx, name, user.groups, grants_of(user.groups, conf.group_map)):
        with ctx.db.session() as s:
            if s.query(User).filter(User.name == name, User.source != SOURCE).count():
                return None
        raise Forbidden(NO_ROLE)
    return name


def probe(ctx: EngineContext, username: str | None) -> LdapTestResult:
    """Bind as the service account and, given a name, find the user and what a login would
    give it (no password needed)."""
    conf = _conf(ctx)
    if conf is None:
        raise NotFound(NOT_SET)
    conn = _service(conf)
    try:
        answer = LdapTestResult(url=conf.url, bind_dn=conf.bind_dn,
                                message=f"bound to {conf.url} as {conf.bind_dn}")
        if username is None:
            return answer
        user = _find(conf, conn, username.lower())
    finally:
        _close(conn)
    answer.user = username.lower()
    if user is None:
        answer.message += f"; no single entry matches {conf.user_filter} for {username!r}"
        return answer
    grants = grants_of(user.groups, conf.group_map)
    with ctx.db.session() as s:
        assigned = _assigned(s, answer.user, user.groups)
    role = role_of(grants) or (NONE if assigned else None)
    have = {normalize_dn(g) for g in user.groups}
    answer.user_dn, answer.groups, answer.role = user.dn, list(user.groups), role
    answer.grants = [m for m in conf.group_map if normalize_dn(m.group) in have]
    answer.message += f"; found {user.dn} in {len(user.groups)} group(s): " + (
        NO_ROLE if role is None else f"a login gets role {role}"
        + (" and the grants listed" if answer.grants else "")
        + (" and its role assignments" if assigned else ""))
    return answer
