"""Projects: made, listed (those the caller sees), shown with their quotas against their use,
and deleted only once they own nothing. `default` is always there."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from corral.api.projects import ProjectInfo
from corral.engine.access import DEFAULT_PROJECT, Access
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import (
    Image,
    Network,
    Project,
    RoleAssignment,
    SecurityGroup,
    Token,
    Vm,
    VmGroup,
    Volume,
)
from corral.engine.services import quotas
from corral.errors import Conflict, InvalidInput, NotFound
from corral.validation import validate_name

# What a project owns, by the name `project show` gives each kind.
OWNED: dict[str, Any] = {"vms": Vm, "networks": Network, "images": Image, "volumes": Volume,
                         "security_groups": SecurityGroup, "vm_groups": VmGroup}


def _get(s: Session, name: str) -> Project:
    row = s.query(Project).filter_by(name=name).one_or_none()
    if row is None:
        raise NotFound(f"project {name} not found", field="name")
    return row


def _holds(s: Session, name: str) -> dict[str, int]:
    return {kind: s.query(model).filter_by(project=name).count() for kind, model in OWNED.items()}


def _info(s: Session, row: Project) -> ProjectInfo:
    limits = row.quotas or {}
    return ProjectInfo(name=row.name, description=row.description, created_at=row.created_at,
                       quotas={q: (int(limits[q]) if limits.get(q) is not None else None)
                               for q in quotas.QUOTAS},
                       usage=quotas.usage(s, row.name), holds=_holds(s, row.name))


def check_quotas(changes: dict[str, Any]) -> dict[str, int | None]:
    """Quota name -> a limit (an int >= 0, bytes for memory and disk) or None (no limit)."""
    checked: dict[str, int | None] = {}
    for key, value in changes.items():
        if key not in quotas.QUOTAS:
            raise InvalidInput(f"quota {key!r}: one of {', '.join(quotas.QUOTAS)}", field=key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise InvalidInput(f"quota {key}: a number >= 0, or none to clear it", field=key)
        checked[key] = value
    return checked


def create(ctx: EngineContext, name: str, description: str = "",
           limits: dict[str, Any] | None = None) -> ProjectInfo:
    validate_name(name)
    checked = {k: v for k, v in check_quotas(limits or {}).items() if v is not None}
    taken = f"project {name} exists"
    with claims.unique(taken, field="name"), ctx.db.session() as s:  # a concurrent create
        if s.query(Project.id).filter_by(name=name).first() is not None:
            raise Conflict(taken, field="name")
        row = Project(name=name, description=description, quotas=checked)
        s.add(row)
        s.flush()
        return _info(s, row)


def list_projects(ctx: EngineContext, access: Access) -> list[ProjectInfo]:
    """The projects the caller sees (a role on them, or on every project)."""
    with ctx.db.session() as s:
        return [_info(s, row) for row in s.query(Project).order_by(Project.name)
                if access.sees(row.name)]


def show(ctx: EngineContext, name: str, access: Access) -> ProjectInfo:
    """One project; one the caller does not see is as if it did not exist (404)."""
    if not access.sees(name):
        raise NotFound(f"project {name} not found", field="name")
    with ctx.db.session() as s:
        return _info(s, _get(s, name))


def set_quota(ctx: EngineContext, name: str, changes: dict[str, Any]) -> ProjectInfo:
    """Set (an int) or clear (None) the limits named; the others stay. A limit below what
    the project uses now is kept: it refuses more, and takes nothing away."""
    checked = check_quotas(changes)
    with ctx.db.session() as s:
        row = _get(s, name)
        claims.hold(s, row)  # against a concurrent change of the other limits
        limits = dict(row.quotas or {})
        for key, value in checked.items():
            if value is None:
                limits.pop(key, None)
            else:
                limits[key] = value
        row.quotas = limits  # a new dict: the JSON column sees the change
        s.flush()
        return _info(s, row)


def delete(ctx: EngineContext, name: str) -> None:
    """Delete an empty project, the role assignments on it and the tokens bound to it
    (recreated under the same name, it would otherwise open to them again). Refused for
    `default` and while it owns anything (409 naming what)."""
    if name == DEFAULT_PROJECT:
        raise Conflict("the default project cannot be deleted", field="name")
    with ctx.db.session() as s:
        row = _get(s, name)
        claims.hold(s, row)  # a create that checks its quota waits, then finds no project
        held = {kind: n for kind, n in _holds(s, name).items() if n}
        if held:
            what = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in held.items())
            raise Conflict(f"project {name} still holds {what}: delete them first",
                           field="name", holds=held)
        s.query(RoleAssignment).filter_by(project=name).delete()
        s.query(Token).filter_by(project=name).delete()
        s.delete(row)
