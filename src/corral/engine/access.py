"""What one caller may do, project by project: its user's global role, the roles assigned to
it and to its directory groups (on one project or on ``*``), its directory grants, all capped
by the token it shows (the token's role, and the one project a token may be bound to).

Computed once per request (routes/deps.py); the routes ask it, the services only filter
lists by the projects it names (:meth:`Access.projects_with`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from corral.engine.db.models import Project, Role, RoleAssignment, Token, User
from corral.engine.permissions import ALL_PROJECTS, PERMISSIONS, PROJECT_SCOPED, ROLES, SELF

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Access:
    """``scopes``: project name (or ``*``) → the permissions held there, before the cap;
    ``cap``: the most the token may do; ``only``: the one project a token is bound to."""

    scopes: dict[str, frozenset[str]]
    cap: frozenset[str]
    only: str | None = None
    # (role, project or '*') pairs the user holds: what `whoami` shows
    grants: tuple[tuple[str, str], ...] = field(default=())

    def in_project(self, project: str) -> frozenset[str]:
        if self.only is not None and project != self.only:
            return frozenset()
        held = self.scopes.get(ALL_PROJECTS, frozenset()) | self.scopes.get(project, frozenset())
        return held & self.cap

    def everywhere(self) -> frozenset[str]:
        """The permissions held on every project (``*``): those the engine-wide ones need."""
        if self.only is not None:
            return frozenset()
        return self.scopes.get(ALL_PROJECTS, frozenset()) & self.cap

    def anywhere(self) -> frozenset[str]:
        held: frozenset[str] = frozenset().union(*self.scopes.values()) if self.scopes \
            else frozenset()
        if self.only is not None:
            held = self.in_project(self.only)
        return held & self.cap

    def sees(self, project: str) -> bool:
        """Whether the project exists for the caller at all (else: 404, as if it did not)."""
        return bool(self.in_project(project))

    def may(self, permission: str, project: str) -> bool:
        if permission == SELF:
            return True
        if permission in PROJECT_SCOPED:
            return permission in self.in_project(project)
        if permission.endswith(".read"):
            return permission in self.anywhere()
        return permission in self.everywhere()

    def projects_with(self, permission: str, known: list[str]) -> list[str]:
        """Of the ``known`` projects, those where ``permission`` is held."""
        return [p for p in known if permission in self.in_project(p)]


def role_sets(s: Session) -> dict[str, frozenset[str]]:
    """Every role's permissions: the built-in ones and the custom ones."""
    sets = dict(ROLES)
    for r in s.query(Role).all():
        sets.setdefault(r.name, frozenset(r.permissions))
    return sets


def of_user(s: Session, user: User | None, token: Token | None = None) -> Access:
    """The access of a request showing ``token`` (``user``: its owner, None for the engine's
    own tokens, which hold their role on every project); without a token, or for a login
    session, all the user may (a session's role is only shown, it caps nothing)."""
    sets = role_sets(s)
    everything = frozenset(PERMISSIONS)
    cap = everything if token is None or token.kind == "session" \
        else sets.get(token.role, frozenset())
    only = token.project if token is not None else None
    if user is None:
        return Access({ALL_PROJECTS: cap}, cap, only,
                      ((token.role if token else "admin", ALL_PROJECTS),))
    scopes: dict[str, set[str]] = defaultdict(set)
    grants = {(user.role, ALL_PROJECTS)}
    subjects = [("user", user.name)] + [("group", g) for g in _group_names(user.groups)]
    for kind, name in subjects:
        for a in s.query(RoleAssignment).filter_by(subject_kind=kind, subject=name):
            grants.add((a.role, a.project))
    grants |= {(str(role), str(project)) for role, project in user.grants or []}
    for role, project in grants:
        scopes[project] |= sets.get(role, frozenset())
    return Access({k: frozenset(v) for k, v in scopes.items()}, cap, only,
                  tuple(sorted(grants)))


def _group_names(groups: list[str] | None) -> list[str]:
    """What `role assign @GROUP` may name a directory group by: its DN as the directory
    spells it, or its first RDN's value (``cn=vmadmins,ou=groups,...`` → ``vmadmins``)."""
    names: list[str] = []
    for dn in groups or []:
        names.append(dn)
        first = dn.split(",", 1)[0]
        if "=" in first:
            names.append(first.split("=", 1)[1].strip())
    return names


def project_names(s: Session) -> list[str]:
    return [name for (name,) in s.query(Project.name).order_by(Project.name)]
