"""Bad requests at the API edge: a clear 4xx naming the field, and nothing created.

The engine runs for real (SQLite, migrations, routes, services); its one host points to an
agent address that nothing listens on, so any request that slipped past validation would
show up as a created row or operation, which every test checks there is none of.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Operation, Vm


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        s.add(Image(name="inst", status="ready", format="iso", virtual_size=8 << 20,
                    file_size=8 << 20))
        s.flush()
        image_id, host_id = s.query(Image).filter_by(name="tiny").one().id, host.id
        s.add(Vm(name="busy", image_id=image_id, host_id=host_id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="running",
                 desired_power="running"))
    client = admin_client(ctx)
    yield client, ctx
    ctx.ops.shutdown()


def _counts(ctx: EngineContext) -> tuple[int, int]:
    with ctx.db.session() as s:
        return s.query(Vm).count(), s.query(Operation).count()


def _post_vm(client: TestClient, body: Any) -> Any:
    return client.post("/api/v1/vms", json=body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "image": "tiny"}, "name"),
        ({"name": "x" * 64, "image": "tiny"}, "name"),
        ({"name": "../x", "image": "tiny"}, "name"),
        ({"name": "has space", "image": "tiny"}, "name"),
        ({"name": "café", "image": "tiny"}, "name"),
        ({"name": "ok", "image": "../etc"}, "image"),
        ({"name": "ok", "image": "tiny", "memory": "0"}, "memory"),
        ({"name": "ok", "image": "tiny", "memory": -1}, "memory"),
        ({"name": "ok", "image": "tiny", "memory": "lots"}, "memory"),
        ({"name": "ok", "image": "tiny", "cpus": 0}, "cpus"),
        ({"name": "ok", "image": "tiny", "cpus": "two"}, "cpus"),
        ({"name": "ok", "image": "tiny", "disk": "0G"}, "disk"),
        ({"name": "ok", "image": "tiny", "start": "maybe"}, "start"),
        ({"name": "ok", "image": "tiny", "colour": "red"}, "colour"),
        ({"image": "tiny"}, "name"),
        ({"name": "ok"}, "image"),
        ({"name": "ok", "image": "tiny", "iso": "inst", "disk": "1G"}, "image"),
        ({"name": "ok", "iso": "inst"}, "disk"),
        ({"name": "ok", "image": "inst"}, "image"),
        ({"name": "ok", "iso": "tiny", "disk": "1G"}, "iso"),
        ({"name": "ok", "iso": "../x", "disk": "1G"}, "iso"),
        ({"name": 5, "image": "tiny"}, "name"),
    ],
)
def test_invalid_vm_create(engine: tuple[TestClient, EngineContext], body: Any, field: str) -> None:
    client, ctx = engine
    before = _counts(ctx)
    resp = _post_vm(client, body)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_input"
    assert err["field"] == field
    assert field in err["message"]
    assert _counts(ctx) == before


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"name": "ok", "image": "nope"}, 404, "not_found", "image nope not found"),
        ({"name": "ok", "image": "tiny", "network": "nonet"}, 404, "not_found", "network nonet"),
        ({"name": "busy", "image": "tiny"}, 409, "conflict", "already exists"),
        ({"name": "ok", "image": "tiny", "memory": "1T"}, 409, "insufficient_resources",
         "host h1 refuses it: memory: needs 1048576 MiB"),
        ({"name": "ok", "image": "tiny", "disk": "1M"}, 409, "conflict", "smaller than image"),
    ],
)
def test_refused_vm_create(engine: tuple[TestClient, EngineContext], body: Any, status: int,
                           code: str, words: str) -> None:
    client, ctx = engine
    before = _counts(ctx)
    resp = _post_vm(client, body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert words in resp.json()["error"]["message"]
    assert _counts(ctx) == before


def test_malformed_json(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    resp = client.post("/api/v1/vms", content=b"{name: oops", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert "not valid JSON" in resp.json()["error"]["message"]
    resp = client.post("/api/v1/vms", json=["a", "list"])
    assert resp.status_code == 422


def test_wrong_state_actions(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    before = _counts(ctx)
    resp = client.put("/api/v1/vms/busy/state", json={"action": "start"})
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "wrong_state"
    assert "it is running" in resp.json()["error"]["message"]
    resp = client.put("/api/v1/vms/busy/state", json={"action": "resume"})
    assert resp.status_code == 409
    resp = client.delete("/api/v1/vms/busy")
    assert resp.status_code == 409
    assert "stop it first" in resp.json()["error"]["message"]
    resp = client.put("/api/v1/vms/busy/state", json={"action": "explode"})
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "action"
    resp = client.put("/api/v1/vms/ghost/state", json={"action": "start"})
    assert resp.status_code == 404
    assert _counts(ctx) == before


def test_image_in_use_not_deleted(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ = engine
    resp = client.delete("/api/v1/images/tiny")
    assert resp.status_code == 409
    assert "used by VMs: busy" in resp.json()["error"]["message"]
    assert client.get("/api/v1/images/tiny").json()["status"] == "ready"


def test_image_import_bad_source(engine: tuple[TestClient, EngineContext], tmp_path: Path) -> None:
    client, ctx = engine
    resp = client.post("/api/v1/images", json={"name": "x", "source": str(tmp_path / "missing.img")})
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "source"
    resp = client.post("/api/v1/images", json={"name": "x", "source": "relative.img"})
    assert resp.status_code == 422
    with ctx.db.session() as s:
        assert s.query(Image).count() == 2


def test_tokens_required(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ = engine
    assert client.get("/api/v1/health", headers={"Authorization": ""}).status_code == 200
    resp = client.get("/api/v1/vms", headers={"Authorization": ""})
    assert resp.status_code == 401
    resp = client.get("/api/v1/vms", headers={"Authorization": "Bearer crl_wrong"})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"


def test_tokens_stored_hashed(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    secret = client.headers["Authorization"].removeprefix("Bearer ")
    raw = (ctx.settings.data_dir / "corral.db").read_bytes()
    assert secret.encode() not in raw
