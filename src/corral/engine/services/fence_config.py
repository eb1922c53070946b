"""A host's fence methods (`corral host fence set|show|remove`): which fence agent, with
which options, in which order. Secret options are sealed with the engine's key
(corral.engine.fencing.secrets) and only ever named in answers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from corral.api.fencing import MAX_METHODS, FenceMethod, FenceMethodSet
from corral.engine.context import EngineContext
from corral.engine.db.models import FenceMethod as FenceRow
from corral.engine.db.models import Host, utcnow
from corral.engine.fencing import find_agent, secrets
from corral.engine.fencing.protocol import check_options
from corral.errors import InvalidInput, NotFound

# The one option the engine gives the agent itself, per run
RESERVED = {"action"}


@dataclass(frozen=True)
class Method:
    """A method as the fencing service runs it: options with secrets unsealed."""

    position: int
    agent: str
    options: dict[str, str]


def _host(s: Session, name: str) -> Host:
    host = s.query(Host).filter_by(name=name).one_or_none()
    if host is None:
        raise NotFound(f"host {name} not found (`corral host list`)", field="name")
    return host


def _out(row: FenceRow) -> FenceMethod:
    return FenceMethod(position=row.position, agent=row.agent, options=dict(row.options),
                       secrets=sorted(row.secret_names))


def _rows(s: Session, host_id: str) -> list[FenceRow]:
    return list(s.query(FenceRow).filter_by(host_id=host_id).order_by(FenceRow.position))


def show(ctx: EngineContext, name: str) -> list[FenceMethod]:
    with ctx.db.session() as s:
        return [_out(r) for r in _rows(s, _host(s, name).id)]


def set_method(ctx: EngineContext, name: str, req: FenceMethodSet) -> FenceMethod:
    """Add the method (after the last) or replace the one at ``req.position``."""
    find_agent(req.agent)  # 422 for a bad or missing agent, before anything is kept
    check_options(req.options)
    reserved = RESERVED & set(req.options)
    if reserved:
        raise InvalidInput(f"option {min(reserved)}: set by corral on each run",
                           field="options")
    sealed = {k: v for k, v in req.options.items() if secrets.is_secret(k)}
    plain = {k: v for k, v in req.options.items() if k not in sealed}
    with ctx.db.session() as s:
        host = _host(s, name)
        rows = _rows(s, host.id)
        position = req.position or (rows[-1].position + 1 if rows else 1)
        if position > MAX_METHODS:
            raise InvalidInput(f"a host has at most {MAX_METHODS} fence methods",
                               field="position")
        row = next((r for r in rows if r.position == position), None)
        if row is None:
            row = FenceRow(host_id=host.id, position=position)
            s.add(row)
        row.agent, row.options = req.agent, plain
        row.secrets = secrets.seal(ctx.settings.data_dir, sealed)
        row.secret_names = sorted(sealed)
        row.updated_at = utcnow()
        s.flush()
        return _out(row)


def remove(ctx: EngineContext, name: str, position: int | None) -> list[FenceMethod]:
    """Remove the method at ``position`` (None: every method); the methods left."""
    with ctx.db.session() as s:
        host = _host(s, name)
        rows = _rows(s, host.id)
        gone = [r for r in rows if position is None or r.position == position]
        if position is not None and not gone:
            raise NotFound(f"host {name} has no fence method {position} (`corral host fence "
                           f"show {name}`)", field="position")
        for r in gone:
            s.delete(r)
        return [_out(r) for r in rows if r not in gone]


def methods(ctx: EngineContext, host_id: str) -> list[Method]:
    """The host's methods in order, secrets unsealed (for the fencing service only)."""
    with ctx.db.session() as s:
        rows = _rows(s, host_id)
        return [Method(r.position, r.agent,
                       {**r.options, **secrets.unseal(ctx.settings.data_dir, r.secrets)})
                for r in rows]


def configured(ctx: EngineContext, host_id: str) -> bool:
    with ctx.db.session() as s:
        return s.query(FenceRow.id).filter_by(host_id=host_id).first() is not None
