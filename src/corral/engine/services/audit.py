"""The audit log: appending a record to the hash chain, listing, verifying and pruning.

Each record's ``hash`` is sha256 over the canonical JSON of its fields (seq included) and
the ``prev_hash`` it carries, which is the hash of the record before it: editing, removing
or reordering a kept record breaks the chain at that seq. Appending reads the last record
and inserts ``seq + 1`` in one unit of work; ``seq`` is the primary key, so of two
appenders (threads or engines) that read the same last record one insert fails and that
one reads again: the chain never forks. Retention removes the oldest records; verify then
starts from the first kept one and trusts its ``prev_hash``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from corral.api.audit import AuditEntry, AuditVerify
from corral.engine.context import EngineContext
from corral.engine.db.models import AuditRecord, utcnow
from corral.errors import Unavailable

log = logging.getLogger(__name__)

GENESIS = "0" * 64  # the prev_hash of the first record ever
_APPEND_TRIES = 200  # each lost race means another appender won: progress is made
_PRUNE_EVERY = timedelta(hours=1)
_VERIFY_BATCH = 1000


@dataclass(frozen=True)
class Entry:
    """What a request leaves in the log (the chain's fields are added on append)."""

    user: str | None
    token_name: str | None
    client: str | None
    project: str
    action: str
    target: str
    status: int
    error: str | None = None


def _clip(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def record_hash(fields: dict[str, Any], prev_hash: str) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of the fields and prev_hash."""
    doc = {**fields, "time": _utc(fields["time"]).isoformat(), "prev_hash": prev_hash}
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def _fields(r: AuditRecord) -> dict[str, Any]:
    return {"seq": r.seq, "time": r.time, "user": r.user, "token_name": r.token_name,
            "client": r.client, "project": r.project, "action": r.action, "target": r.target,
            "status": r.status, "error": r.error}


def append(ctx: EngineContext, entry: Entry) -> int:
    """Add the entry at the end of the chain; its seq. Prunes by retention at most hourly."""
    for _ in range(_APPEND_TRIES):
        try:
            with ctx.db.session() as s:
                last = s.execute(sa.select(AuditRecord.seq, AuditRecord.hash)
                                 .order_by(AuditRecord.seq.desc()).limit(1)).first()
                seq, prev = (last[0] + 1, last[1]) if last is not None else (1, GENESIS)
                fields: dict[str, Any] = {
                    "seq": seq, "time": utcnow(), "user": _clip(entry.user, 63),
                    "token_name": _clip(entry.token_name, 63),
                    "client": _clip(entry.client, 64), "project": entry.project[:63],
                    "action": entry.action[:63], "target": entry.target[:255],
                    "status": entry.status, "error": _clip(entry.error, 63)}
                s.add(AuditRecord(**fields, prev_hash=prev, hash=record_hash(fields, prev)))
        except IntegrityError:
            continue  # another appender took this seq first: read the new last record
        _maybe_prune(ctx)
        return seq
    raise Unavailable("the audit log is too busy: could not append a record")


# -- retention --------------------------------------------------------------------------------

# When each engine context last pruned (by the context's id: a dataclass is not hashable).
_PRUNED: dict[int, datetime] = {}
_PRUNED_LOCK = threading.Lock()


def _maybe_prune(ctx: EngineContext) -> None:
    now = utcnow()
    with _PRUNED_LOCK:
        last = _PRUNED.get(id(ctx))
        if last is not None and now - last < _PRUNE_EVERY:
            return
        if last is None:
            weakref.finalize(ctx, _PRUNED.pop, id(ctx), None)
        _PRUNED[id(ctx)] = now
    prune(ctx, now)


def prune(ctx: EngineContext, now: datetime | None = None) -> int:
    """Remove the records older than the engine's retention (0 days: keep all); how many.
    The newest record always stays, so the chain goes on from its hash."""
    days = ctx.settings.audit_retention_days
    if days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=days)
    with ctx.db.session() as s:
        newest = s.execute(sa.select(sa.func.max(AuditRecord.seq))).scalar()
        if newest is None:
            return 0
        res = s.execute(sa.delete(AuditRecord).where(AuditRecord.time < cutoff,
                                                     AuditRecord.seq < newest))
        gone = int(getattr(res, "rowcount", 0) or 0)
    if gone:
        log.info("audit log: %d records older than %d days pruned", gone, days)
    return gone


# -- reading ----------------------------------------------------------------------------------

def entry_of(r: AuditRecord) -> AuditEntry:
    return AuditEntry(seq=r.seq, time=r.time, user=r.user, token_name=r.token_name,
                      client=r.client, project=r.project, action=r.action, target=r.target,
                      status=r.status, error=r.error, prev_hash=r.prev_hash, hash=r.hash)


def listing(ctx: EngineContext, *, since: datetime | None = None, user: str | None = None,
            project: str | None = None, action: str | None = None, limit: int = 100,
            before: int | None = None) -> list[AuditEntry]:
    """Newest first. ``action`` ending in ``.*`` matches a prefix (``vm.*``); ``before``:
    the next page, records with a lower seq."""
    q = sa.select(AuditRecord)
    if since is not None:
        q = q.where(AuditRecord.time >= _utc(since))
    if user is not None:
        q = q.where(AuditRecord.user == user)
    if project is not None:
        q = q.where(AuditRecord.project == project)
    if action is not None:
        if action.endswith(".*"):
            q = q.where(AuditRecord.action.startswith(action[:-1], autoescape=True))
        else:
            q = q.where(AuditRecord.action == action)
    if before is not None:
        q = q.where(AuditRecord.seq < before)
    with ctx.db.session() as s:
        rows = s.execute(q.order_by(AuditRecord.seq.desc()).limit(limit)).scalars().all()
        return [entry_of(r) for r in rows]


def verify(ctx: EngineContext) -> AuditVerify:
    """Walk the kept chain in seq order; the first record that does not hold."""
    count, first, prev_seq, prev_hash = 0, None, None, None
    with ctx.db.session() as s:
        after = 0
        while True:  # bounded: each batch moves ``after`` past the rows it read
            rows = s.execute(sa.select(AuditRecord).where(AuditRecord.seq > after)
                             .order_by(AuditRecord.seq).limit(_VERIFY_BATCH)).scalars().all()
            if not rows:
                break
            for r in rows:
                why = _broken(r, prev_seq, prev_hash)
                if why:
                    return AuditVerify(ok=False, count=count, first_seq=first, last_seq=prev_seq,
                                       broken_seq=r.seq, message=f"seq {r.seq}: {why}")
                first = r.seq if first is None else first
                count, prev_seq, prev_hash = count + 1, r.seq, r.hash
            after = rows[-1].seq
            s.expunge_all()
    pruned = f" (from seq {first}: older ones pruned)" if first not in (None, 1) else ""
    return AuditVerify(ok=True, count=count, first_seq=first, last_seq=prev_seq,
                       message=f"{count} records, chain intact{pruned}")


def _broken(r: AuditRecord, prev_seq: int | None, prev_hash: str | None) -> str | None:
    if prev_seq is not None and r.seq != prev_seq + 1:
        return f"records {prev_seq + 1}..{r.seq - 1} are missing"
    if prev_hash is not None and r.prev_hash != prev_hash:
        return f"prev_hash is not the hash of seq {prev_seq}"
    if prev_seq is None and r.seq == 1 and r.prev_hash != GENESIS:
        return "the first record does not start the chain"
    if record_hash(_fields(r), r.prev_hash) != r.hash:
        return "its fields do not match its hash (edited)"
    return None
