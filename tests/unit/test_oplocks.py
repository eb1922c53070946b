"""The runner's lock table (engine/oplocks.py): all-or-nothing grants, FIFO per lock."""

from __future__ import annotations

from corral.engine.oplocks import LockTable, normalize


def test_locks_are_kept_once_each_in_sorted_order() -> None:
    assert normalize(["vm:b", "network:n", "vm:b", "", "vm:a"]) == ["network:n", "vm:a", "vm:b"]
    table = LockTable()
    assert table.request("op1", ["vm:b", "vm:a", "vm:b"]) == ["op1"]
    assert table.holding("op1") == ["vm:a", "vm:b"]


def test_all_or_nothing_in_submission_order_per_lock() -> None:
    table = LockTable()
    assert table.request("hold-a", ["vm:a"]) == ["hold-a"]
    # op2 needs a (held) and b (free): it takes neither while it waits...
    assert table.request("op2", ["vm:a", "vm:b"]) == []
    assert table.holding("op2") == [] and table.waiting("op2")
    # ...and op3, submitted later, does not overtake it on b (op2 would starve).
    assert table.request("op3", ["vm:b"]) == []
    # A request on other locks is granted at once: no head-of-line blocking.
    assert table.request("op4", ["vm:c"]) == ["op4"]
    assert table.release("hold-a") == ["op2"]
    assert table.release("op2") == ["op3"]


def test_opposite_declaration_orders_never_deadlock() -> None:
    table = LockTable()
    assert table.request("x", ["vm:a", "vm:b"]) == ["x"]
    assert table.request("y", ["vm:b", "vm:a"]) == []
    assert table.request("z", ["vm:a", "vm:b"]) == []
    assert table.release("x") == ["y"]
    assert table.release("y") == ["z"]
    assert table.release("z") == []


def test_withdrawing_a_waiter_lets_those_behind_it_go() -> None:
    table = LockTable()
    table.request("hold", ["vm:a"])
    table.request("waiter", ["vm:a", "vm:b"])
    assert table.request("behind", ["vm:b"]) == []
    assert table.withdraw("waiter") == (True, ["behind"])
    assert table.withdraw("waiter") == (False, [])  # once only
    assert table.release("hold") == []


def test_try_hold_never_waits_nor_overtakes() -> None:
    table = LockTable()
    assert table.try_hold("r1", ["vm:a"])
    assert not table.try_hold("r2", ["vm:a"])  # held
    assert table.request("op", ["vm:a"]) == []
    assert table.release("r1") == ["op"]
    table.release("op")
    table.request("hold", ["vm:b"])
    table.request("queued", ["vm:c", "vm:b"])  # vm:c is free but queued for
    assert not table.try_hold("r3", ["vm:c"])
    assert table.try_hold("r4", ["vm:d"])
