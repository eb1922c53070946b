"""Undo hooks: what a cancelled operation that never started gives back.

Services mark rows before they submit (a VM ``creating``, a volume ``attaching``, a new
image row...): those marks are what keeps other requests away while the operation is
pending. When the operation is dropped (``operation cancel`` before it started) its type's
undo, registered with ``ctx.ops.register(..., undo=...)``, takes them back. Undo hooks
touch the database only (nothing was done on a host yet) and are idempotent.
"""

from __future__ import annotations

from typing import Any

from corral.engine.context import EngineContext
from corral.engine.db.models import Base
from corral.engine.operations import Executor, OpContext


def delete_row(ctx: EngineContext, model: type[Base], key: str, event: str | None = None,
               field: str = "status") -> Executor:
    """The row the service inserted for the operation (its id in ``params[key]``) goes;
    ``event``: the kind of bus event that says so (``{"name": ..., field: "deleted"}``)."""

    def undo(op: OpContext) -> None:
        with ctx.db.session() as s:
            row: Any = s.get(model, op.params.get(key))
            if row is None:
                return
            name = getattr(row, "name", None)
            s.delete(row)
        if event:
            ctx.bus.publish(event, {"name": name, field: "deleted"})

    return undo


def set_fields(ctx: EngineContext, model: type[Base], key: str, **fields: Any) -> Executor:
    """The row the operation works on (id in ``params[key]``) gets ``fields`` back (e.g.
    ``status="ready"``)."""

    def undo(op: OpContext) -> None:
        with ctx.db.session() as s:
            row = s.get(model, op.params.get(key))
            if row is not None:
                for name, value in fields.items():
                    setattr(row, name, value)

    return undo


def restore(ctx: EngineContext, model: type[Base], key: str, saved: str = "was") -> Executor:
    """The row gets back the fields the service saved in ``params[saved]`` before it
    marked them (e.g. a VM's state and desired power before ``delete``)."""

    def undo(op: OpContext) -> None:
        before = op.params.get(saved) or {}
        with ctx.db.session() as s:
            row = s.get(model, op.params.get(key))
            if row is not None:
                for name, value in before.items():
                    setattr(row, name, value)

    return undo
