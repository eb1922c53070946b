"""Claims as compare-and-swap in the database (Nova's ``update_on_match``).

Reading a row, checking it is free, then writing it is a race between two requests: both
read "free". A claim is one conditional UPDATE that only matches while the row is still
as expected, and the row count says who won; the same holds on SQLite (one writer at a
time) and on PostgreSQL (the second UPDATE waits for the first's row lock, then re-checks
its WHERE on the row as the first left it). A value that must be unique (a MAC, a static
IP) is claimed by its unique constraint: the loser's INSERT fails, and becomes a 409.
"""

from __future__ import annotations

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


@contextmanager
def unique(message: str, field: str | None = None, **details: Any) -> Iterator[None]:
    """A unique constraint broken inside the block (a concurrent request took the value
    first) as a 409 with ``message``; the caller's unit of work is rolled back."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(message, field=field, **details) from exc
