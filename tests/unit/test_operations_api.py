"""/api/v1/operations (cancel, filtered pages), `corral operation cancel|list`, the locks the
services declare, and atomic volume claims, on the seeded engine (engine_seed.py).

Operations are kept pending by holding their locks (``ctx.ops.try_hold``) or gated test
executors: nothing waits on a clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from corral.api import DiskAttach, NicCreate, Operation, VmState
from corral.cli import node as node_cli
from corral.cli.main import app as cli_app
from corral.client import Client
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db import claims
from corral.engine.db.models import Image, Nic, StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.services import pools, security_groups, vm_disks, vm_nics
from corral.errors import Conflict

WAIT = 10.0


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        image_id = s.query(Image).filter_by(name="tiny").one().id
        for name in ("a", "b"):
            s.add(Vm(name=name, image_id=image_id, host_id=host.id, cpus=1, memory_mib=64,
                     disk_bytes=64 << 20, state=VmState.STOPPED.value))
        pool = StoragePool(name="p", type="dir", path=str(tmp_path / "p"), host_id=host.id,
                           status="ready")
        s.add(pool)
        s.flush()
        s.add(Volume(pool_id=pool.id, name="v", format="qcow2", size=1 << 20, status="ready"))
    ctx.ops.register("test.gated", _gated)
    yield admin_client(ctx), ctx
    _GATE.set()
    ctx.ops.shutdown()


_STARTED, _GATE = threading.Event(), threading.Event()


def _gated(_op: OpContext) -> None:
    """A test operation that runs until the test ends."""
    _STARTED.set()
    _GATE.wait(WAIT)


def test_cancel_a_pending_vm_create_removes_the_vm(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    with ctx.ops.try_hold(["vm:new1"]):  # its lock is busy: the create waits, pending
        resp = client.post("/api/v1/vms", json={"name": "new1", "image": "tiny"})
        assert resp.status_code == 202, resp.text
        op = resp.json()
        assert op["status"] == "pending" and op["may_cancel"] and op["location"] == "h1"
        assert client.get("/api/v1/vms/new1").status_code == 200
        resp = client.delete(f"/api/v1/operations/{op['id']}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "cancelled" and not resp.json()["may_cancel"]
    assert client.get("/api/v1/vms/new1").status_code == 404  # its undo: no VM left behind
    resp = client.delete(f"/api/v1/operations/{op['id']}")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "conflict"
    assert "already cancelled: there is nothing to cancel" in resp.json()["error"]["message"]
    assert client.delete("/api/v1/operations/nope").status_code == 404


def test_a_running_operation_that_cannot_stop_is_409(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    _STARTED.clear()
    _GATE.clear()
    op = ctx.ops.submit("test.gated", {}, {})
    assert _STARTED.wait(WAIT)
    resp = client.delete(f"/api/v1/operations/{op.id}")
    assert resp.status_code == 409
    assert "cannot be cancelled" in resp.json()["error"]["message"]


def test_list_filters_and_pages(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    with ctx.ops.try_hold(["vm:x"]):
        ids = [ctx.ops.submit("test.gated", {"vms": ["x"]}, {}, ["vm:x"]).id for _ in range(3)]
        resp = client.get("/api/v1/operations", params={"status": "pending", "type": "test.gated",
                                                        "limit": 2})
        assert resp.status_code == 200, resp.text
        first = resp.json()
        assert [o["id"] for o in first] == ids[:0:-1]
        rest = client.get("/api/v1/operations", params={"status": ["pending", "running"],
                                                        "after": first[-1]["id"]}).json()
        assert [o["id"] for o in rest] == ids[:1]
        assert client.get("/api/v1/operations", params={"type": "vm.create"}).json() == []
        bad = client.get("/api/v1/operations", params={"status": "sleeping"})
        assert bad.status_code == 422 and bad.json()["error"]["field"].startswith("status")
        assert client.get("/api/v1/operations", params={"after": "nope"}).status_code == 404
        for op_id in ids:
            client.delete(f"/api/v1/operations/{op_id}")


def _cli(client: TestClient, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    def sdk(_data_dir: Path | None = None) -> Client:
        c = Client("http://testserver", "unused")
        c._http = TestClient(client.app, headers=dict(client.headers))
        return c

    monkeypatch.setattr(node_cli, "client", sdk)
    return CliRunner().invoke(cli_app, list(args))


def test_cli_cancel_and_list(engine: tuple[TestClient, EngineContext],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    client, ctx = engine
    with ctx.ops.try_hold(["vm:x"]):
        op = ctx.ops.submit("test.gated", {"vms": ["x"]}, {}, ["vm:x"])
        listed = _cli(client, monkeypatch, "operation", "list", "--status", "pending",
                      "--type", "test.gated", "--limit", "5", "-o", "json")
        assert listed.exit_code == 0, listed.output
        assert [(o["id"], o["status"]) for o in json.loads(listed.output)] == [(op.id, "pending")]
        done = _cli(client, monkeypatch, "operation", "cancel", op.id)
        assert done.exit_code == 0, done.output
        assert f"operation {op.id} (test.gated) cancelled" in done.output
    again = _cli(client, monkeypatch, "operation", "cancel", op.id)
    assert again.exit_code == 2 and "nothing to cancel" in again.output


def test_services_declare_every_lock(engine: tuple[TestClient, EngineContext],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    client, ctx = engine
    seen: dict[str, list[str]] = {}
    real = ctx.ops.submit

    def submit(type_: str, resources: dict[str, list[str]], params: dict[str, Any],
               locks: list[str], **kw: Any) -> Operation:
        seen[type_] = sorted(locks)
        return real("test.gated", resources, params, locks, **kw)

    monkeypatch.setattr(ctx.ops, "submit", submit)
    assert client.post("/api/v1/vms/a/nics", json={"network": "default"}).status_code == 202
    assert client.post("/api/v1/vms/b/disks", json={"volume": "p/v"}).status_code == 202
    assert seen == {"vm.nic_add": ["network:default", "vm:a"],
                    "vm.disk_attach": ["vm:b", "volume:p/v"]}


def test_two_attaches_of_one_volume_one_wins(engine: tuple[TestClient, EngineContext],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Both requests read the volume free (a barrier holds them there); the claim is one
    conditional UPDATE, so exactly one gets it and the other a 409."""
    _client, ctx = engine
    both_read = threading.Barrier(2, timeout=WAIT)
    real_usable = pools.usable_on

    def usable_after_both_read(pool: StoragePool, host_id: str | None) -> bool:
        both_read.wait()
        return real_usable(pool, host_id)

    monkeypatch.setattr(pools, "usable_on", usable_after_both_read)
    submitted: list[str] = []
    monkeypatch.setattr(ctx.ops, "submit", lambda type_, *_a, **_k: submitted.append(type_))
    results: dict[str, object] = {}

    def attach(vm: str) -> None:
        try:
            results[vm] = vm_disks.attach(ctx, vm, DiskAttach(volume="p/v"))
        except Conflict as exc:
            results[vm] = exc

    threads = [threading.Thread(target=attach, args=(vm,)) for vm in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    errors = [r for r in results.values() if isinstance(r, Conflict)]
    assert len(results) == 2 and len(errors) == 1 and submitted == ["vm.disk_attach"]
    assert "already attached to VM" in errors[0].message and errors[0].status == 409
    with ctx.db.session() as s:
        vol = s.query(Volume).filter_by(name="v").one()
        owner = s.get(Vm, vol.vm_id)
        assert owner is not None and vol.status == "attaching"
        loser = next(vm for vm, r in results.items() if isinstance(r, Conflict))
        assert owner.name != loser


def test_two_nics_asking_one_static_ip_one_wins(engine: tuple[TestClient, EngineContext],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race on a unique value: both read the address free; the unique constraint
    takes the second insert, which becomes a 409 (not a 500). (``claims.hold`` of the
    network would make the second wait for the first: taken away here, so that both read
    before either writes, as they could on a database where the hold is only a row lock.)"""
    _client, ctx = engine
    monkeypatch.setattr(claims, "hold", lambda _s, _row: None)
    both_read = threading.Barrier(2, timeout=WAIT)
    real_resolve = security_groups.resolve

    def resolve_after_both_read(*args: Any) -> Any:
        both_read.wait()
        return real_resolve(*args)

    monkeypatch.setattr(security_groups, "resolve", resolve_after_both_read)
    monkeypatch.setattr(ctx.ops, "submit", lambda type_, *_a, **_k: type_)
    results: dict[str, object] = {}

    def add(vm: str) -> None:
        try:
            results[vm] = vm_nics.add(ctx, vm, NicCreate(network="default", ip="10.210.0.50"))
        except Conflict as exc:
            results[vm] = exc

    threads = [threading.Thread(target=add, args=(vm,)) for vm in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(type(r).__name__ for r in results.values()) == ["Conflict", "str"]
    with ctx.db.session() as s:
        assert s.query(Nic).filter_by(ip="10.210.0.50").count() == 1
