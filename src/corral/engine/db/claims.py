"""Claims as compare-and-swap in the database (Nova's ``update_on_match``).

Reading a row, checking it is free, then writing it is a race between two requests: both
read "free". A claim is one conditional UPDATE that only matches while the row is still
as expected, and the row count says who won; the same holds on SQLite (one writer at a
time) and on PostgreSQL (the second UPDATE waits for the first's row lock, then re-checks
its WHERE on the row as the first left it). A value that must be unique (a MAC, a static
IP) is claimed by its unique constraint: the loser's INSERT fails, and becomes a 409.
A check no constraint can express (overlapping subnets, one path per pool or export) runs
after :func:`serialize`, which makes the unit of work the only writer of its kind until it
ends, so no other can pass the same check in between.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.engine.db.models import Base
from corral.errors import Conflict


def claim(s: Session, model: type[Base], row_id: str, expect: dict[str, Any],
          values: dict[str, Any]) -> bool:
    """``UPDATE model SET values WHERE id = row_id AND expect`` (a None in ``expect``: IS
    NULL); whether this call changed the row. Objects of the row already loaded in ``s``
    are refreshed from the database."""
    table: Any = model
    where = [table.id == row_id]
    where += [getattr(table, k).is_(None) if v is None else getattr(table, k) == v
              for k, v in expect.items()]
    res = s.execute(sa.update(table).where(*where).values(**values)
                    .execution_options(synchronize_session=False))
    won = getattr(res, "rowcount", 0) == 1
    row = s.get(model, row_id)
    if row is not None:
        s.refresh(row)
    return won


def serialize(s: Session, model: type[Base]) -> None:
    """Make ``s`` the one writer of ``model``'s kind until it commits or rolls back: call it
    first, then check and write. SQLite: a write statement (matching no row) takes the
    database's write lock now, and reads after it see every committed write. PostgreSQL: a
    transaction-scoped advisory lock named after the table."""
    table: Any = model
    if s.get_bind().dialect.name == "sqlite":
        s.execute(sa.update(table).where(sa.false()).values(id=table.id)
                  .execution_options(synchronize_session=False))
    else:
        key = zlib.crc32(str(table.__tablename__).encode())
        s.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def hold(s: Session, row: Base) -> None:
    """Lock ``row`` for the unit of work and read it again: of two units that ``hold`` the
    same row (a delete of an image and a create of a VM on it), the second sees the row as
    the first left it. SQLite: :func:`serialize` (one writer at a time); PostgreSQL:
    ``SELECT ... FOR UPDATE``."""
    if s.get_bind().dialect.name == "sqlite":
        serialize(s, type(row))
        s.refresh(row)
    else:
        s.refresh(row, with_for_update=True)


@contextmanager
def unique(message: str, field: str | None = None, **details: Any) -> Iterator[None]:
    """A unique constraint broken inside the block (a concurrent request took the value
    first) as a 409 with ``message``; the caller's unit of work is rolled back."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(message, field=field, **details) from exc
