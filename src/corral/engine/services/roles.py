"""Custom roles (named sets of permissions) and role assignments: a role given to a user or
a directory group (``@GROUP``) on one project or on all of them (``*``). What they grant is
computed at each request (engine/access.py): a change holds from the next request on."""

from __future__ import annotations

from sqlalchemy.orm import Session

from corral.api.projects import RoleAssignmentOut, RoleInfo
from corral.engine import access
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Project, Role, RoleAssignment, Token, User
from corral.engine.permissions import ALL_PROJECTS, ROLES, check_permissions, check_role
from corral.errors import Conflict, InvalidInput, NotFound
from corral.validation import validate_name

GROUP_MARK = "@"
SUBJECT_MAX = 255
BUILTIN_WHAT = {
    "none": "nothing (a user's role when its assignments give it all it may do)",
    "viewer": "reads everything but users, roles and the audit log",
    "user": "VMs, volumes, snapshots and consoles; networks to attach",
    "operator": "everything but users, hosts, roles and projects (which it reads)",
    "admin": "everything",
}


def list_roles(ctx: EngineContext) -> list[RoleInfo]:
    """The built-in roles (least to most), then the custom ones by name."""
    rows = [RoleInfo(name=n, builtin=True, description=BUILTIN_WHAT.get(n, ""),
                     permissions=sorted(perms)) for n, perms in ROLES.items()]
    with ctx.db.session() as s:
        rows += [_info(r) for r in s.query(Role).order_by(Role.name)]
    return rows


def _info(r: Role) -> RoleInfo:
    return RoleInfo(name=r.name, builtin=False, description=r.description,
                    permissions=sorted(r.permissions))


def create_role(ctx: EngineContext, name: str, patterns: list[str],
                description: str = "") -> RoleInfo:
    """A custom role holding every permission its patterns match (``vm.*``, ``*.read``),
    kept as the permissions themselves: a permission added later joins no existing role."""
    validate_name(name)
    if name in ROLES:
        raise Conflict(f"role {name} is built in; pick another name", field="name")
    perms = check_permissions(patterns)
    taken = f"role {name} exists"
    with claims.unique(taken, field="name"), ctx.db.session() as s:
        if s.query(Role.id).filter_by(name=name).first() is not None:
            raise Conflict(taken, field="name")
        row = Role(name=name, description=description, permissions=sorted(perms))
        s.add(row)
        s.flush()
        return _info(row)


def delete_role(ctx: EngineContext, name: str) -> None:
    """Refused for a built-in role and while anything holds it (assignments, users whose
    role it is, API tokens that carry it): 409 naming them."""
    if name in ROLES:
        raise Conflict(f"role {name} is built in and cannot be deleted", field="name")
    with ctx.db.session() as s:
        row = s.query(Role).filter_by(name=name).one_or_none()
        if row is None:
            raise NotFound(f"role {name} not found", field="name")
        uses = [f"{_subject(a)} on {a.project}"
                for a in s.query(RoleAssignment).filter_by(role=name)
                .order_by(RoleAssignment.subject)]
        uses += [f"user {u.name}'s role" for u in s.query(User).filter_by(role=name)]
        uses += [f"token {t.name}" for t in s.query(Token).filter_by(role=name)]
        if uses:
            shown = ", ".join(uses[:5]) + (f" and {len(uses) - 5} more" if len(uses) > 5 else "")
            raise Conflict(f"role {name} is in use: {shown} (`corral role unassign` first)",
                           field="name", uses=len(uses))
        s.delete(row)


def _subject(a: RoleAssignment) -> str:
    return GROUP_MARK + a.subject if a.subject_kind == "group" else a.subject


def parse_subject(subject: str) -> tuple[str, str]:
    """``alice`` -> (user, alice); ``@ops`` -> (group, ops): a directory group, any name
    (its DN too), which exists only in the directory."""
    if subject.startswith(GROUP_MARK):
        group = subject[1:].strip()
        if not group or len(group) > SUBJECT_MAX:
            raise InvalidInput(f"{subject!r}: @ then a directory group's name (at most "
                               f"{SUBJECT_MAX} characters)", field="subject")
        return "group", group
    if not subject or len(subject) > 63:
        raise InvalidInput("a user name, or @GROUP for a directory group", field="subject")
    return "user", subject


def _out(a: RoleAssignment) -> RoleAssignmentOut:
    return RoleAssignmentOut(subject=_subject(a), kind=a.subject_kind, role=a.role,
                             project=a.project, created_at=a.created_at)


def _check_project(s: Session, project: str) -> None:
    if project == ALL_PROJECTS:
        return
    if s.query(Project.id).filter_by(name=project).first() is None:
        raise NotFound(f"project {project} not found (`corral project list`)", field="project")


def assign(ctx: EngineContext, subject: str, role: str,
           project: str = ALL_PROJECTS) -> RoleAssignmentOut:
    kind, name = parse_subject(subject)
    taken = f"{subject} already holds role {role} on {project}"
    with claims.unique(taken, field="role"), ctx.db.session() as s:
        check_role(role, custom=access.role_sets(s))
        if role == "none":
            raise InvalidInput("role none grants nothing: assign another one", field="role")
        if kind == "user" and s.query(User.id).filter_by(name=name).first() is None:
            raise NotFound(f"user {name} not found (`corral user list`; @{name} for a "
                           "directory group)", field="subject")
        _check_project(s, project)
        if s.query(RoleAssignment.id).filter_by(subject_kind=kind, subject=name, role=role,
                                                project=project).first() is not None:
            raise Conflict(taken, field="role")
        row = RoleAssignment(subject_kind=kind, subject=name, role=role, project=project)
        s.add(row)
        s.flush()
        return _out(row)


def unassign(ctx: EngineContext, subject: str, role: str, project: str = ALL_PROJECTS) -> None:
    kind, name = parse_subject(subject)
    with ctx.db.session() as s:
        gone = s.query(RoleAssignment).filter_by(subject_kind=kind, subject=name, role=role,
                                                 project=project).delete()
    if not gone:
        raise NotFound(f"{subject} holds no role {role} on {project} "
                       "(`corral role assignments`)", field="subject")


def list_assignments(ctx: EngineContext, subject: str | None = None,
                     project: str | None = None) -> list[RoleAssignmentOut]:
    """Every assignment, or those of one subject and/or on one project (``*`` included
    only when asked for ``*``)."""
    with ctx.db.session() as s:
        q = s.query(RoleAssignment)
        if subject is not None:
            kind, name = parse_subject(subject)
            q = q.filter_by(subject_kind=kind, subject=name)
        if project is not None:
            q = q.filter_by(project=project)
        rows = q.order_by(RoleAssignment.project, RoleAssignment.subject_kind,
                          RoleAssignment.subject, RoleAssignment.role)
        return [_out(a) for a in rows]
