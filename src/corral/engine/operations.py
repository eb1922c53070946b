"""Operations: every change is a persisted row with status and progress, run by workers.

An operation runs in phases (Ganeti's lesson): the service checks arguments and
preconditions before ``submit`` (no side effects, errors go back to the caller as 4xx);
the executor registered for its type then does the work in a worker thread. Executors
are idempotent, so an operation interrupted by an engine crash is simply run again
when the engine restarts (``resume_interrupted``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from corral.api import Operation as OperationOut
from corral.api import OperationStatus
from corral.engine.db.models import Operation
from corral.engine.db.session import Database
from corral.engine.events import EventBus
from corral.errors import CorralError, NotFound

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


class OpContext:
    """Handed to an executor: its parameters and a way to report progress."""

    def __init__(self, runner: OperationRunner, op_id: str, params: dict[str, Any]) -> None:
        self.runner = runner
        self.id = op_id
        self.params = params

    def progress(self, percent: int, message: str | None = None) -> None:
        self.runner.update(self.id, progress=max(0, min(100, percent)), message=message)


Executor = Callable[[OpContext], None]


def to_api(op: Operation) -> OperationOut:
    return OperationOut(
        id=op.id, type=op.type, status=OperationStatus(op.status), progress=op.progress,
        message=op.message, resources=op.resources, error=op.error,
        created_at=op.created_at, updated_at=op.updated_at,
    )


class OperationRunner:
    def __init__(self, db: Database, bus: EventBus, workers: int = 8) -> None:
        self.db = db
        self.bus = bus
        self._executors: dict[str, Executor] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._done = threading.Condition()
        self._generation = 0  # bumped each time an operation ends
        # One lock per resource (e.g. "vm:demo"): operations on one VM run one at a time.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def register(self, type_: str, executor: Executor) -> None:
        self._executors[type_] = executor

    def lock(self, resource: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(resource, threading.Lock())

    def submit(self, type_: str, resources: dict[str, list[str]], params: dict[str, Any],
               lock: str | None = None) -> OperationOut:
        if type_ not in self._executors:
            raise CorralError(f"no executor for operation type {type_}")
        with self.db.session() as s:
            op = Operation(type=type_, resources=resources, params={**params, "_lock": lock})
            s.add(op)
            s.flush()
            out = to_api(op)
        self.bus.publish("operation", out.model_dump(mode="json"))
        self._pool.submit(self._run, out.id)
        return out

    def _run(self, op_id: str) -> None:
        with self.db.session() as s:
            op = s.get(Operation, op_id)
            if op is None:
                return
            type_, params = op.type, dict(op.params)
            op.attempts += 1
        lock = self.lock(params["_lock"]) if params.get("_lock") else None
        try:
            if lock is not None:
                lock.acquire()
            self.update(op_id, status=OperationStatus.RUNNING)
            self._executors[type_](OpContext(self, op_id, params))
        except CorralError as exc:
            self.update(op_id, status=OperationStatus.FAILURE, error=exc.to_dict(),
                        message=exc.message)
        except Exception as exc:  # a bug: record it rather than leave the op running forever
            log.exception("operation %s (%s) crashed", op_id, type_)
            err = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
            self.update(op_id, status=OperationStatus.FAILURE, error=err, message=err["message"])
        else:
            self.update(op_id, status=OperationStatus.SUCCESS, progress=100)
        finally:
            if lock is not None:
                lock.release()
            with self._done:
                self._generation += 1
                self._done.notify_all()

    def update(self, op_id: str, **fields: Any) -> None:
        with self.db.session() as s:
            op = s.get(Operation, op_id)
            if op is None:
                return
            for k, v in fields.items():
                setattr(op, k, v.value if isinstance(v, OperationStatus) else v)
            s.flush()
            out = to_api(op)
        self.bus.publish("operation", out.model_dump(mode="json"))

    def get(self, op_id: str) -> OperationOut:
        with self.db.session() as s:
            op = s.get(Operation, op_id)
            if op is None:
                raise NotFound(f"operation {op_id} not found")
            return to_api(op)

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

    def resume_interrupted(self) -> list[str]:
        """Run again what a crash interrupted; give up after MAX_ATTEMPTS with a reason."""
        resumed = []
        with self.db.session() as s:
            rows = s.query(Operation).filter(Operation.status.in_(["pending", "running"])).all()
            for op in rows:
                if op.attempts >= MAX_ATTEMPTS or op.type not in self._executors:
                    op.status = OperationStatus.FAILURE.value
                    op.message = f"engine restarted {op.attempts} times during this operation"
                    op.error = {"code": "interrupted", "message": op.message}
                else:
                    op.status = OperationStatus.PENDING.value
                    op.message = "resumed after engine restart"
                    resumed.append(op.id)
        for op_id in resumed:
            self._pool.submit(self._run, op_id)
        return resumed

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
