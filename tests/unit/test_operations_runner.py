"""The operation runner (engine/operations.py) on a real SQLite database: declared locks
without head-of-line blocking, preconditions under the locks, cancel, and leases that keep
two engines on one database from running each other's live operations.

Executors are held and released with threading.Events; nothing here asserts a duration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from corral.api import Operation as OperationOut
from corral.api import OperationStatus
from corral.engine.db.models import Operation, utcnow
from corral.engine.db.session import Database, migrate
from corral.engine.events import EventBus
from corral.engine.operations import OpContext, OperationRunner
from corral.errors import Conflict, NotFound, WrongState

WAIT = 10.0  # the most any Event wait may take before the test fails (never a timing)


class Gates:
    """A ``gated`` executor: records that it started, then waits for its gate to open."""

    def __init__(self) -> None:
        self.started: dict[str, threading.Event] = {}
        self.gates: dict[str, threading.Event] = {}
        self.order: list[str] = []
        self._lock = threading.Lock()

    def _event(self, table: dict[str, threading.Event], name: str) -> threading.Event:
        with self._lock:
            return table.setdefault(name, threading.Event())

    def started_(self, name: str) -> threading.Event:
        return self._event(self.started, name)

    def open(self, name: str) -> None:
        self._event(self.gates, name).set()

    def __call__(self, op: OpContext) -> None:
        name = str(op.params["gate"])
        with self._lock:
            self.order.append(name)
        self.started_(name).set()
        if not self._event(self.gates, name).wait(WAIT):
            raise AssertionError(f"gate {name} never opened")


def _runner(url: str, workers: int = 2) -> OperationRunner:
    return OperationRunner(Database(url), EventBus(), workers=workers, renew_s=0)


@pytest.fixture()
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    migrate(url)
    return url


@pytest.fixture()
def runner(url: str) -> Iterator[tuple[OperationRunner, Gates]]:
    ops, gates = _runner(url), Gates()
    ops.register("test.gated", gates)
    yield ops, gates
    for name in list(gates.gates) + list(gates.started):
        gates.open(name)
    ops.shutdown(wait=True)


def _submit(ops: OperationRunner, gate: str, *locks: str, type_: str = "test.gated") -> str:
    return ops.submit(type_, {}, {"gate": gate}, list(locks)).id


def _status(ops: OperationRunner, op_id: str) -> str:
    return ops.get(op_id).status.value


def test_declared_locks_are_stored_sorted_once_each(
        runner: tuple[OperationRunner, Gates]) -> None:
    ops, gates = runner
    op_id = ops.submit("test.gated", {}, {"gate": "g"}, ["vm:b", "network:n", "vm:b"],
                       lock="vm:a").id
    gates.open("g")
    assert ops.wait(op_id, WAIT).status == OperationStatus.SUCCESS
    with ops.db.session() as s:
        row = s.get(Operation, op_id)
        assert row is not None and row.locks == ["network:n", "vm:a", "vm:b"]


def test_operations_queued_on_one_vm_do_not_hold_the_workers(
        runner: tuple[OperationRunner, Gates]) -> None:
    """Two workers, three operations queued on vm:a: the one on vm:b, submitted last,
    still runs at once (the old runner took a worker per waiting operation)."""
    ops, gates = runner
    a_ops = [_submit(ops, f"a{i}", "vm:a") for i in range(3)]
    b_op = _submit(ops, "b", "vm:b")
    assert gates.started_("b").wait(WAIT)
    assert gates.started_("a0").wait(WAIT)  # both run at once; either may start first
    assert [_status(ops, i) for i in a_ops[1:]] == ["pending", "pending"]
    gates.open("b")
    for i in range(3):
        gates.open(f"a{i}")
    assert all(ops.wait(i, WAIT).status == OperationStatus.SUCCESS for i in [*a_ops, b_op])
    assert [g for g in gates.order if g.startswith("a")] == ["a0", "a1", "a2"]  # FIFO


def test_opposite_lock_orders_do_not_deadlock(runner: tuple[OperationRunner, Gates]) -> None:
    ops, gates = runner
    ids = []
    for i in range(8):
        locks = ("vm:x", "network:y") if i % 2 else ("network:y", "vm:x")
        ids.append(_submit(ops, f"g{i}", *locks))
        gates.open(f"g{i}")
    assert all(ops.wait(i, WAIT).status == OperationStatus.SUCCESS for i in ids)


def test_try_hold_waits_for_nothing_and_blocks_operations_meanwhile(
        runner: tuple[OperationRunner, Gates]) -> None:
    ops, gates = runner
    with ops.try_hold(["vm:a"]) as held:
        assert held
        op_id = _submit(ops, "a", "vm:a")
        with ops.try_hold(["vm:a"]) as again:
            assert not again
        assert _status(ops, op_id) == "pending"
    assert gates.started_("a").wait(WAIT)  # released: the queued operation goes
    gates.open("a")
    assert ops.wait(op_id, WAIT).status == OperationStatus.SUCCESS
    holder = _submit(ops, "h", "vm:a")
    assert gates.started_("h").wait(WAIT)
    with ops.try_hold(["vm:a"]) as held:
        assert not held  # the reconciler leaves a VM alone while its operation runs
    gates.open("h")
    assert ops.wait(holder, WAIT).status == OperationStatus.SUCCESS


def test_prereq_runs_under_the_locks_and_its_refusal_undoes_the_marks(
        runner: tuple[OperationRunner, Gates]) -> None:
    ops, gates = runner
    state = {"vm": "stopped"}
    undone: list[str] = []
    ran: list[str] = []

    def prereq(op: OpContext) -> None:
        if state["vm"] != "stopped":
            raise WrongState(f"VM is {state['vm']} now: stop it first", state=state["vm"])

    ops.register("test.needs_stopped", lambda op: ran.append(op.id), prereq=prereq,
                 undo=lambda op: undone.append(op.id))
    start = _submit(ops, "start", "vm:a")  # a start queued before: it runs first
    refused = ops.submit("test.needs_stopped", {}, {}, ["vm:a"]).id
    assert gates.started_("start").wait(WAIT)
    state["vm"] = "running"  # what the start did
    gates.open("start")
    op = ops.wait(refused, WAIT)
    assert op.status == OperationStatus.FAILURE
    assert op.error is not None and op.error["code"] == "wrong_state"
    assert ran == [] and undone == [refused]
    assert ops.wait(start, WAIT).status == OperationStatus.SUCCESS


def test_cancel_a_pending_operation_drops_it_and_undoes_its_marks(
        runner: tuple[OperationRunner, Gates]) -> None:
    ops, gates = runner
    undone: list[str] = []
    ops.register("test.marked", gates, undo=lambda op: undone.append(op.id))
    first = _submit(ops, "first", "vm:a")
    pending = _submit(ops, "never", "vm:a", type_="test.marked")
    assert ops.get(pending).may_cancel
    behind = _submit(ops, "behind", "vm:a")
    out = ops.cancel(pending)
    assert out.status == OperationStatus.CANCELLED and out.status.done and not out.may_cancel
    assert out.error is not None and out.error["code"] == "cancelled"
    assert undone == [pending]
    gates.open("first")
    gates.open("behind")
    assert ops.wait(behind, WAIT).status == OperationStatus.SUCCESS
    assert ops.wait(first, WAIT).status == OperationStatus.SUCCESS
    assert "never" not in gates.order and _status(ops, pending) == "cancelled"


def test_cancel_a_running_operation_through_its_flag(
        runner: tuple[OperationRunner, Gates]) -> None:
    ops, _gates = runner
    steps: list[int] = []
    started, go_on = threading.Event(), threading.Event()

    def long_work(op: OpContext) -> None:
        started.set()
        for step in range(1000):
            go_on.wait(WAIT)
            op.check_cancelled()  # a safe point between steps
            steps.append(step)
            go_on.clear()

    ops.register("test.long", long_work, may_cancel=True)
    op_id = ops.submit("test.long", {}, {}, ["image:x"]).id
    assert started.wait(WAIT)
    assert ops.get(op_id).may_cancel
    asked = ops.cancel(op_id)
    assert asked.status == OperationStatus.RUNNING and asked.message == "cancel requested"
    go_on.set()
    done = ops.wait(op_id, WAIT)
    assert done.status == OperationStatus.CANCELLED and steps == []
    assert done.error is not None and done.error["code"] == "cancelled"


def test_cancel_refusals(runner: tuple[OperationRunner, Gates]) -> None:
    ops, gates = runner
    running = _submit(ops, "r", "vm:a")
    assert gates.started_("r").wait(WAIT)
    assert not ops.get(running).may_cancel
    with pytest.raises(Conflict, match="has started and cannot be cancelled"):
        ops.cancel(running)  # its executor never looks at the flag
    gates.open("r")
    assert ops.wait(running, WAIT).status == OperationStatus.SUCCESS
    with pytest.raises(Conflict, match="already success: there is nothing to cancel"):
        ops.cancel(running)
    with pytest.raises(NotFound):
        ops.cancel("no-such-operation")


def test_listing_pages_and_filters(runner: tuple[OperationRunner, Gates]) -> None:
    ops, gates = runner
    ops.register("test.other", lambda op: None)
    ids = [_submit(ops, f"g{i}", type_="test.gated" if i % 2 else "test.other")
           for i in range(7)]
    for i in range(7):
        gates.open(f"g{i}")
    assert all(ops.wait(i, WAIT).status.done for i in ids)
    seen: list[OperationOut] = []
    after = None
    while True:
        page = ops.listing(limit=3, after=after)
        seen += page
        if len(page) < 3:
            break
        after = page[-1].id
    assert sorted(o.id for o in seen) == sorted(ids) and len(seen) == len(ids)  # each once
    keys = [(o.created_at, o.id) for o in seen]
    assert keys == sorted(keys, reverse=True)  # newest first, in a stable order
    gated = ops.listing(type_="test.gated", status=[OperationStatus.SUCCESS])
    assert {o.id for o in gated} == {i for n, i in enumerate(ids) if n % 2}
    assert ops.listing(status=[OperationStatus.RUNNING]) == []
    with pytest.raises(NotFound):
        ops.listing(after="no-such-operation")


def test_two_engines_on_one_database_honour_each_others_leases(url: str) -> None:
    """Engine A runs an operation; engine B leaves it alone while A's lease lasts, takes
    it over once it ran out (A "crashed"), and A, back, can no longer write to it."""
    a, b = _runner(url), _runner(url)
    a_gates, b_ran = Gates(), []
    a.register("test.work", a_gates)
    b.register("test.work", lambda op: b_ran.append(op.id))
    try:
        op_id = a.submit("test.work", {}, {"gate": "a"}, ["vm:a"]).id
        assert a_gates.started_("a").wait(WAIT)
        with b.db.session() as s:  # a row from before owners (or from a vanished engine)
            s.add(Operation(type="test.work", status="pending", params={"gate": "old"}))
            s.flush()
            old = s.query(Operation).filter(Operation.owner.is_(None)).one().id
        assert b.resume_interrupted() == [old]
        assert b.wait(old, WAIT).status == OperationStatus.SUCCESS
        a.renew()
        assert b.resume_interrupted() == []  # A vouches for its operation: hands off
        assert _status(a, op_id) == "running"
        with a.db.session() as s:  # A stops renewing (it was killed): its lease runs out
            row = s.get(Operation, op_id)
            assert row is not None
            row.lease_until = utcnow() - timedelta(seconds=1)
        assert b.resume_interrupted() == [op_id]
        done = b.wait(op_id, WAIT)
        assert done.status == OperationStatus.SUCCESS and b_ran == [old, op_id]
        assert done.message == "resumed after its engine stopped"
        a_gates.open("a")
        a.shutdown(wait=True)  # A's executor ends: its writes are fenced off
        with a.db.session() as s:
            row = s.get(Operation, op_id)
            assert row is not None and row.owner == b.id and row.attempts == 2
        assert b.get(op_id).status == OperationStatus.SUCCESS
    finally:
        a_gates.open("a")
        a.shutdown(wait=True)
        b.shutdown(wait=True)


def test_a_cancel_asked_on_another_engine_reaches_the_owner(url: str) -> None:
    a, b = _runner(url), _runner(url)
    started = threading.Event()

    def long_work(op: OpContext) -> None:
        started.set()
        for _ in range(int(WAIT / 0.01)):
            op.check_cancelled()
            threading.Event().wait(0.01)

    for ops in (a, b):
        ops.register("test.long", long_work, may_cancel=True)
        ops.register("test.gated", Gates())
    try:
        op_id = a.submit("test.long", {}, {}).id
        assert started.wait(WAIT)
        asked = b.cancel(op_id)
        assert asked.status == OperationStatus.RUNNING
        a.renew()  # the owner reads the row's request at its next renewal
        assert a.wait(op_id, WAIT).status == OperationStatus.CANCELLED
        # Nobody's pending operation (its engine is gone) is cancelled by whoever is asked.
        with a.try_hold(["vm:busy"]):
            orphan = a.submit("test.gated", {}, {"gate": "x"}, ["vm:busy"]).id
            with a.db.session() as s:
                row = s.get(Operation, orphan)
                assert row is not None
                row.owner, row.lease_until = "gone-engine", utcnow() - timedelta(seconds=1)
            assert b.cancel(orphan).status == OperationStatus.CANCELLED
        assert b.resume_interrupted() == []  # done: nobody runs it again
    finally:
        a.shutdown(wait=True)
        b.shutdown(wait=True)
