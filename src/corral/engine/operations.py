"""Operations: every change is a persisted row with status and progress, run by workers.

An operation runs in phases (Ganeti's lesson): the service checks arguments and
preconditions before ``submit`` (no side effects, errors go back to the caller as 4xx) and
declares every lock the operation needs; the runner grants them all at once, in submission
order per lock (engine/oplocks.py), and only then hands the operation to a worker, so
operations queued on one VM never hold workers that others could use. In the worker the
type's ``prereq`` (if any) checks the preconditions again now that nothing else can change
them, then the executor does the work. Executors are idempotent: an operation interrupted
by an engine crash is simply run again (``resume_interrupted``) by whichever engine finds
its owner's lease run out.

Cancel (``cancel``): an operation that never started is dropped (its type's ``undo`` puts
back what the service marked before submitting); a running one, of a type registered
``may_cancel``, gets a flag its executor checks between steps (``OpContext.check_cancelled``
raises :class:`Cancelled`, which the executor's own rollback handles like any error).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from corral.api import Operation as OperationOut
from corral.api import OperationStatus
from corral.engine.db import claims
from corral.engine.db.models import Host, Operation, utcnow
from corral.engine.db.session import Database
from corral.engine.events import EventBus
from corral.engine.oplocks import LockTable, normalize
from corral.engine.oprows import ACTIVE, orphaned, page, to_api
from corral.engine.projects import project_of_resources
from corral.errors import Cancelled, Conflict, CorralError, NotFound

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
LEASE_S = 15.0  # how long an engine vouches for its operations without renewing
RENEW_S = 3.0  # how often it renews (and takes over operations whose lease ran out)

class OpContext:
    """Handed to an executor: its parameters, a way to report progress, the cancel flag."""

    def __init__(self, runner: OperationRunner, op_id: str, params: dict[str, Any],
                 cancel: threading.Event | None = None) -> None:
        self.runner = runner
        self.id = op_id
        self.params = params
        self._cancel = cancel or threading.Event()

    def progress(self, percent: int, message: str | None = None) -> None:
        self.runner.update(self.id, progress=max(0, min(100, percent)), message=message)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Call between steps: raises :class:`Cancelled` once a cancel was asked for."""
        if self._cancel.is_set():
            raise Cancelled(f"operation {self.id} was cancelled")


Executor = Callable[[OpContext], None]


@dataclass(frozen=True)
class OpType:
    execute: Executor
    prereq: Executor | None = None  # under the locks, before execute; raises to refuse
    undo: Executor | None = None  # a dropped (never started) one: revert the service's marks
    may_cancel: bool = False  # execute checks the cancel flag while it runs
    # A run that failed (or crashed): move the marks on to where a retry or a delete can
    # start again (an ``error`` state), so no row stays "deleting" for ever.
    failed: Executor | None = None


@dataclass
class _Live:
    """An operation this runner owns and has not finished."""

    phase: str  # waiting (for locks) | ready (locks held, for a worker) | running | dropped
    attempts: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)


def _refuse_taken(s: Any, resources: dict[str, list[str]], kinds: Sequence[str]) -> None:
    wanted = {(k, v) for k in kinds for v in resources.get(k, [])}
    for other in s.query(Operation).filter(Operation.status.in_(ACTIVE)):
        taken = wanted & {(k, v) for k in kinds for v in (other.resources or {}).get(k, [])}
        if taken:
            kind, value = sorted(taken)[0]
            raise Conflict(f"{value} is in use by operation {other.id} ({other.type}): wait "
                           "for it to end", field=kind, operation=other.id)


class OperationRunner:
    """``lease_s``/``renew_s``: the lease of this engine's operations and how often it is
    renewed (0: no background renewal; tests call :meth:`renew`)."""

    def __init__(self, db: Database, bus: EventBus, workers: int = 8, *,
                 lease_s: float = LEASE_S, renew_s: float = RENEW_S) -> None:
        self.db = db
        self.bus = bus
        self.id = str(uuid.uuid4())  # the owner of what this runner runs
        self.lease_s = lease_s
        self._types: dict[str, OpType] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._table = LockTable()
        self._mutex = threading.Lock()  # guards _live (phases and cancel flags)
        self._live: dict[str, _Live] = {}
        self._done = threading.Condition()
        self._generation = 0  # bumped each time an operation ends
        self._stop = threading.Event()
        if renew_s > 0:
            threading.Thread(target=self._renew_loop, args=(renew_s,), name="op-lease",
                             daemon=True).start()

    def register(self, type_: str, executor: Executor, *, prereq: Executor | None = None,
                 undo: Executor | None = None, may_cancel: bool = False,
                 failed: Executor | None = None) -> None:
        self._types[type_] = OpType(executor, prereq, undo, may_cancel, failed)

    # -- submitting and running ------------------------------------------------------------

    def submit(self, type_: str, resources: dict[str, list[str]], params: dict[str, Any],
               locks: Sequence[str] = (), *, lock: str | None = None,
               host_id: str | None = None, project: str | None = None,
               user: str | None = None, exclusive: Sequence[str] = (),
               message: str | None = None,
               claim: Callable[[Session], None] | None = None) -> OperationOut:
        """Persist and queue an operation. ``locks``: every lock it needs (``lock``: one,
        the older spelling); ``host_id``: the host it works on (its ``location``);
        ``message``: what it says until it reports progress (why it was started);
        ``exclusive``: kinds of ``resources`` (e.g. ``files``) no other pending or running
        operation may name at the same time — refused with a 409 instead of queued;
        ``claim``: a check run in the transaction that records it, no other submit between
        them, so it sees every operation submitted before (a migration's room on its target)."""
        if type_ not in self._types:
            raise CorralError(f"no executor for operation type {type_}")
        names = normalize([*locks, lock or ""])
        project = project or project_of_resources(resources)
        with self.db.session() as s:
            if exclusive or claim:
                claims.serialize(s, Operation)  # no other submit between check and insert
            if exclusive:
                _refuse_taken(s, resources, exclusive)
            if claim:
                claim(s)
            host = s.get(Host, host_id) if host_id else None
            op = Operation(type=type_, resources=resources, params=params, locks=names,
                           location=host.name if host else None, project=project, user=user,
                           owner=self.id, lease_until=self._lease(), message=message)
            s.add(op)
            s.flush()
            out = self._out(op)
        self.bus.publish("operation", out.model_dump(mode="json"))
        self._enqueue(out.id, names, 0)
        return out

    def _enqueue(self, op_id: str, names: list[str], attempts: int,
                 cancel: bool = False) -> None:
        with self._mutex:
            live = self._live[op_id] = _Live("waiting", attempts)
            if cancel:  # a cancel asked while no engine ran it: the executor rolls back
                live.cancel.set()
            granted = self._table.request(op_id, names)
        self._dispatch(granted)

    def _dispatch(self, granted: list[str]) -> None:
        for op_id in granted:
            with self._mutex:
                live = self._live.get(op_id)
                if live is not None and live.phase == "waiting":
                    live.phase = "ready"
            if self._stop.is_set():
                continue  # shutting down: it stays pending, for the next engine to resume
            try:
                self._pool.submit(self._run, op_id)
            except RuntimeError:  # the pool has just shut down
                continue

    def _run(self, op_id: str) -> None:
        try:
            with self._mutex:
                live = self._live.get(op_id)
                if live is not None and live.phase == "ready":
                    live.phase = "running"
            if live is None:
                return
            if live.phase == "dropped":  # cancelled once granted: undo under its locks
                self._undo(op_id)
            else:
                self._execute(op_id, live.cancel)
        finally:
            with self._mutex:
                self._live.pop(op_id, None)
            self._dispatch(self._table.release(op_id))
            self._ended()

    def _execute(self, op_id: str, cancel: threading.Event) -> None:
        with self.db.session() as s:
            op = s.get(Operation, op_id)
            if op is None or op.status not in ACTIVE or op.owner not in (None, self.id):
                return
            type_, params = op.type, dict(op.params)
            op.attempts += 1
            first = op.attempts == 1
        kind = self._types[type_]
        ctx = OpContext(self, op_id, params, cancel)
        executing = False  # prereq passed: a failure from here on is the executor's
        try:
            self.update(op_id, status=OperationStatus.RUNNING)
            if kind.prereq is not None:
                self._prereq(kind, ctx, first)
            executing = True
            kind.execute(ctx)
        except Cancelled as exc:
            self.update(op_id, status=OperationStatus.CANCELLED, error=exc.to_dict(),
                        message=exc.message)
        except CorralError as exc:
            if executing:
                self._failed(kind, ctx)
            self.update(op_id, status=OperationStatus.FAILURE, error=exc.to_dict(),
                        message=exc.message)
        except Exception:  # a bug: record it rather than leave the op running forever
            log.exception("operation %s (%s) crashed", op_id, type_)
            if executing:
                self._failed(kind, ctx)
            # The user gets no raw Python exception: the log has it, under the op's id.
            err = {"code": "internal", "message": f"{type_} failed on an internal error; the "
                   f"engine's log has the details (operation {op_id})"}
            self.update(op_id, status=OperationStatus.FAILURE, error=err, message=err["message"])
        else:
            self.update(op_id, status=OperationStatus.SUCCESS, progress=100)

    def _failed(self, kind: OpType, ctx: OpContext) -> None:
        if kind.failed is None:
            return
        try:
            kind.failed(ctx)
        except Exception:
            log.exception("the failure hook of operation %s failed", ctx.id)

    def _prereq(self, kind: OpType, ctx: OpContext, first: bool) -> None:
        """A refused precondition ends the operation before it did anything: on its first
        run, the service's marks go back as for a cancel."""
        assert kind.prereq is not None
        try:
            kind.prereq(ctx)
        except Exception:
            if first and kind.undo is not None:
                try:
                    kind.undo(ctx)
                except Exception:
                    log.exception("undo after refused precondition of %s failed", ctx.id)
            raise

    def _ended(self) -> None:
        with self._done:
            self._generation += 1
            self._done.notify_all()

    @contextlib.contextmanager
    def try_hold(self, names: Iterable[str]) -> Iterator[bool]:
        """Hold the locks for the ``with`` block if they are free and no operation queues
        for them (yields True), else yield False at once: the reconciler never waits, nor
        overtakes an operation."""
        holder = f"hold:{uuid.uuid4()}"
        held = self._table.try_hold(holder, names)
        try:
            yield held
        finally:
            if held:
                self._dispatch(self._table.release(holder))

    # -- rows --------------------------------------------------------------------------------

    def update(self, op_id: str, **fields: Any) -> None:
        with self.db.session() as s:
            op = s.get(Operation, op_id)
            if op is None or op.owner not in (None, self.id):
                return  # another engine took it over (our lease ran out): hands off
            for k, v in fields.items():
                setattr(op, k, v.value if isinstance(v, OperationStatus) else v)
            s.flush()
            out = self._out(op)
        self.bus.publish("operation", out.model_dump(mode="json"))

    def _out(self, op: Operation) -> OperationOut:
        return to_api(op, self._may_cancel(op))

    def _may_cancel(self, op: Operation) -> bool:
        kind = self._types.get(op.type)
        if op.status == OperationStatus.PENDING.value and not op.attempts:
            return True  # never started: dropped
        return op.status in ACTIVE and kind is not None and kind.may_cancel

    def get(self, op_id: str) -> OperationOut:
        with self.db.session() as s:
            op = s.get(Operation, op_id)
            if op is None:
                raise NotFound(f"operation {op_id} not found")
            return self._out(op)

    def listing(self, *, status: Sequence[OperationStatus] = (), type_: str | None = None,
             limit: int = 50, after: str | None = None,
             projects: Sequence[str] | None = None, engine_wide: bool = True
             ) -> list[OperationOut]:
        """Newest first; see engine/oprows.py for the filters and ``after``."""
        with self.db.session() as s:
            return [self._out(op) for op in page(s, status=status, type_=type_, limit=limit,
                                                 after=after, projects=projects,
                                                 engine_wide=engine_wide)]

    def wait(self, op_id: str, timeout: float) -> OperationOut:
        deadline = time.monotonic() + timeout
        while True:
            # Note the generation before reading: an operation that ends between the read
            # and the wait bumps it, so we do not sleep through its notification.
            with self._done:
                generation = self._generation
            op = self.get(op_id)
            left = deadline - time.monotonic()
            if op.status.done or left <= 0:
                return op
            with self._done:
                if self._generation == generation:
                    self._done.wait(min(left, 0.5))

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, op_id: str) -> OperationOut:
        """Drop a pending operation, flag a running one (404 unknown, 409 finished or not
        cancellable); the operation as it is now."""
        with self.db.session() as s:
            op = s.get(Operation, op_id)
            if op is None:
                raise NotFound(f"operation {op_id} not found")
            status, type_, owner, attempts = op.status, op.type, op.owner, op.attempts
        if status not in ACTIVE:
            raise Conflict(f"operation {op_id} is already {status}: there is nothing to cancel",
                           status=status)
        kind = self._types.get(type_)
        may_cancel = kind is not None and kind.may_cancel
        refused = Conflict(f"operation {op_id} ({type_}) has started and cannot be cancelled: "
                           "only pending ones of its type can", type=type_)
        if (status == OperationStatus.RUNNING.value or attempts) and not may_cancel:
            raise refused
        if owner == self.id:
            self._cancel_own(op_id, may_cancel, refused)
        else:
            self._cancel_other(op_id, attempts)
        return self.get(op_id)

    def _cancel_own(self, op_id: str, may_cancel: bool, refused: Conflict) -> None:
        drop = False
        granted: list[str] = []
        with self._mutex:
            live = self._live.get(op_id)
            if live is None:  # between its row and its queue: _execute will find it done
                drop = True
            elif live.attempts or live.phase == "running":
                if not may_cancel:
                    raise refused
                live.cancel.set()
            elif live.phase == "waiting":
                withdrawn, granted = self._table.withdraw(op_id)
                if withdrawn:
                    del self._live[op_id]
                    drop = True
                else:  # granted meanwhile: _run undoes it under its locks
                    live.phase = "dropped"
            elif live.phase == "ready":
                live.phase = "dropped"
            flagged = live is not None and live.cancel.is_set()
        if flagged:
            self.update(op_id, cancel_requested=True, message="cancel requested")
        elif self._set_cancelled(op_id, "cancelled before it started") and drop:
            self._undo(op_id)
        self._dispatch(granted)
        self._ended()

    def _cancel_other(self, op_id: str, attempts: int) -> None:
        """Another engine's (its owner acts on the row's flag at its next renewal) or
        nobody's: one that never started is cancelled here; one that did is resumed with
        the flag set, so that its executor rolls back."""
        with self.db.session() as s:
            s.execute(sa.update(Operation).where(Operation.id == op_id)
                      .values(cancel_requested=True)
                      .execution_options(synchronize_session=False))
        if not attempts and self._set_cancelled(op_id, "cancelled (no engine ran it)",
                                                orphaned(utcnow())):
            self._undo(op_id)
            self._ended()

    def _set_cancelled(self, op_id: str, message: str,
                       where: sa.ColumnElement[bool] | None = None) -> bool:
        """Pending or running -> cancelled, atomically (one that just ended stays as it
        ended); whether it was this call that cancelled it."""
        error = Cancelled(f"operation {op_id} was cancelled").to_dict()
        with self.db.session() as s:
            res = s.execute(sa.update(Operation)
                            .where(Operation.id == op_id, Operation.status.in_(ACTIVE),
                                   where if where is not None else sa.true())
                            .values(status=OperationStatus.CANCELLED.value, message=message,
                                    error=error, updated_at=utcnow())
                            .execution_options(synchronize_session=False))
            done = getattr(res, "rowcount", 0) == 1
        if done:
            self.bus.publish("operation", self.get(op_id).model_dump(mode="json"))
        return done

    def _undo(self, op_id: str) -> None:
        """Revert what the service marked for an operation that will never run."""
        with self.db.session() as s:
            op = s.get(Operation, op_id)
            if op is None or op.attempts:
                return
            type_, params = op.type, dict(op.params)
        kind = self._types.get(type_)
        if kind is None or kind.undo is None:
            return
        try:
            kind.undo(OpContext(self, op_id, params))
        except Exception:  # the operation stays cancelled; the marks are logged as left
            log.exception("undo of cancelled operation %s (%s) failed", op_id, type_)

    # -- leases, resume after a crash --------------------------------------------------------

    def _lease(self) -> Any:
        return utcnow() + timedelta(seconds=self.lease_s)

    def _renew_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.renew()
                self.resume_interrupted()  # another engine's, once its lease ran out
            except Exception:  # keep renewing whatever one round hit
                log.exception("renewing operation leases failed")

    def renew(self) -> None:
        """Extend the lease of the operations this runner owns and still runs or holds
        pending (in memory, not by the rows: one whose worker died lets its lease run out,
        and is resumed); act on cancels asked for on other engines."""
        with self._mutex:
            live_ids = list(self._live)
        with self.db.session() as s:
            mine = sa.and_(Operation.owner == self.id, Operation.status.in_(ACTIVE))
            if live_ids:
                s.execute(sa.update(Operation).where(mine, Operation.id.in_(live_ids))
                          .values(lease_until=self._lease())
                          .execution_options(synchronize_session=False))
            asked = [i for (i,) in s.query(Operation.id).filter(mine, Operation.cancel_requested)]
        for op_id in asked:
            with self._mutex:
                live = self._live.get(op_id)
                known = live is not None and not live.cancel.is_set()
            if known:
                with contextlib.suppress(CorralError):
                    self.cancel(op_id)

    def resume_interrupted(self) -> list[str]:
        """Take over and run again what no engine vouches for (no owner, or its lease ran
        out); give up after MAX_ATTEMPTS with a reason. Each take-over is an atomic claim:
        of two engines looking at once, one gets it."""
        now = utcnow()
        with self.db.session() as s:
            ids = [i for (i,) in s.query(Operation.id).filter(orphaned(now))
                   .order_by(Operation.created_at, Operation.id)]
        resumed: list[tuple[str, list[str], int, bool]] = []
        undo: list[str] = []
        gave_up: list[tuple[OpType, dict[str, Any], str]] = []
        for op_id in ids:
            with self._mutex:
                ours = op_id in self._live  # alive here, its renewal late (a busy database)
            if ours:
                continue
            with self.db.session() as s:
                res = s.execute(sa.update(Operation).where(Operation.id == op_id, orphaned(now))
                                .values(owner=self.id, lease_until=self._lease())
                                .execution_options(synchronize_session=False))
                if getattr(res, "rowcount", 0) != 1:
                    continue  # another engine claimed it first
                op = s.get(Operation, op_id)
                assert op is not None
                s.refresh(op)
                if op.cancel_requested and not op.attempts:
                    op.status, op.message = OperationStatus.CANCELLED.value, "cancelled"
                    op.error = Cancelled(f"operation {op_id} was cancelled").to_dict()
                    undo.append(op_id)
                elif op.attempts >= MAX_ATTEMPTS or op.type not in self._types:
                    op.status = OperationStatus.FAILURE.value
                    op.message = f"engine restarted {op.attempts} times during this operation"
                    op.error = {"code": "interrupted", "message": op.message}
                    if op.type in self._types:
                        gave_up.append((self._types[op.type], dict(op.params), op_id))
                else:
                    op.status = OperationStatus.PENDING.value
                    op.message = "resumed after its engine stopped"
                    # Rows from before declared locks carried their one lock in params.
                    locks = list(op.locks or []) or [str(op.params.get("_lock") or "")]
                    resumed.append((op_id, normalize(locks), op.attempts,
                                    bool(op.cancel_requested)))
        for op_id in undo:
            self._undo(op_id)
        for kind, params, op_id in gave_up:  # its marks on to an error state, as on failure
            self._failed(kind, OpContext(self, op_id, params))
        for op_id, locks, attempts, cancel in resumed:
            self._enqueue(op_id, locks, attempts, cancel)
        return [r[0] for r in resumed]

    def shutdown(self, wait: bool = False) -> None:
        """Stop (``wait``: for the running executors); hand back the leases so that the
        next engine resumes at once."""
        self._stop.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        with contextlib.suppress(Exception), self.db.session() as s:
            s.execute(sa.update(Operation)
                      .where(Operation.owner == self.id, Operation.status.in_(ACTIVE))
                      .values(lease_until=utcnow())
                      .execution_options(synchronize_session=False))
