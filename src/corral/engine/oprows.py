"""Operation rows: their API form, the paginated listing, and the lease conditions.

The listing is newest first in a stable order, (created_at, id) descending, so that
``after=ID`` (keyset pagination: the rows after that one in this order) pages through
without gaps or repeats while operations keep being added.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from corral.api import Operation as OperationOut
from corral.api import OperationStatus
from corral.engine.db.models import Operation
from corral.errors import NotFound

ACTIVE = (OperationStatus.PENDING.value, OperationStatus.RUNNING.value)


def to_api(op: Operation, may_cancel: bool = False) -> OperationOut:
    return OperationOut(
        id=op.id, type=op.type, status=OperationStatus(op.status), progress=op.progress,
        message=op.message, resources=op.resources, error=op.error,
        created_at=op.created_at, updated_at=op.updated_at, may_cancel=may_cancel,
        location=op.location, project=op.project, user=op.user,
    )


def page(s: Session, *, status: Sequence[OperationStatus] = (), type_: str | None = None,
         limit: int = 50, after: str | None = None, projects: Sequence[str] | None = None,
         engine_wide: bool = True) -> list[Operation]:
    """Up to ``limit`` rows, newest first; only those of ``status`` (any of them) and
    ``type_`` where given; only those after the row ``after`` where given; only those of
    ``projects`` where given, and (``engine_wide``) those of no project (hosts, pools)."""
    q = s.query(Operation)
    if projects is not None:
        mine = Operation.project.in_(list(projects))
        q = q.filter(sa.or_(mine, Operation.project.is_(None)) if engine_wide else mine)
    if status:
        q = q.filter(Operation.status.in_([OperationStatus(st).value for st in status]))
    if type_:
        q = q.filter(Operation.type == type_)
    if after:
        mark = s.get(Operation, after)
        if mark is None:
            raise NotFound(f"operation {after} not found", field="after")
        q = q.filter(sa.or_(Operation.created_at < mark.created_at,
                            sa.and_(Operation.created_at == mark.created_at,
                                    Operation.id < mark.id)))
    return q.order_by(Operation.created_at.desc(), Operation.id.desc()).limit(limit).all()


def orphaned(now: datetime) -> sa.ColumnElement[bool]:
    """Pending or running, and no engine vouches for it: no owner, or the lease ran out."""
    return sa.and_(Operation.status.in_(ACTIVE),
                   sa.or_(Operation.owner.is_(None), Operation.lease_until.is_(None),
                          Operation.lease_until < now))
