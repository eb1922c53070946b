"""Values at the edge: numbers too large for the database or any host, text XML cannot hold,
root disks larger than their pool, and executors' own bugs. Each is refused with a 4xx
naming the field before anything is made, or (a bug) reported without Python's innards.

The engine runs for real (SQLite, routes, services); its host is a stand-in agent
(tests/unit/api_server.QuickHost) whose default pool reports ``FREE`` bytes free.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import QuickHost
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Operation, StoragePool, Vm, Volume

FREE = 10 << 30  # what the host's pools report free


class SmallHost(QuickHost):
    def __call__(self, req: httpx.Request) -> httpx.Response:
        resp = super().__call__(req)
        if req.method == "GET" and req.url.path.startswith("/v1/pools/") \
                and req.url.path.count("/") == 3:
            return httpx.Response(200, json={"capacity": 2 * FREE, "allocation": FREE,
                                             "available": FREE})
        return resp


def _engine(tmp_path: Path, **settings: Any) -> tuple[TestClient, EngineContext]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0, **settings))
    ctx.agent_transport = httpx.MockTransport(SmallHost())
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        s.add(StoragePool(name="default", type="dir", path=str(tmp_path), host_id=host.id,
                          status="ready"))
        s.flush()
        image_id = s.query(Image).filter_by(name="tiny").one().id
        s.add(Vm(name="web", image_id=image_id, host_id=host.id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="stopped"))
    return admin_client(ctx), ctx


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    client, ctx = _engine(tmp_path)
    yield client, ctx
    ctx.ops.shutdown()


def _made(ctx: EngineContext) -> tuple[int, int, int]:
    with ctx.db.session() as s:
        return s.query(Vm).count(), s.query(Volume).count(), s.query(Operation).count()


HUGE = ["99999999999999G", 2**62, 2**70, "1" * 25, "2P"]


@pytest.mark.parametrize("size", HUGE, ids=str)
@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/vms", {"name": "a", "image": "tiny", "disk": None}, "disk"),
    ("/api/v1/vms", {"name": "a", "image": "tiny", "memory": None}, "memory"),
    ("/api/v1/storage/pools/default/volumes", {"name": "v", "size": None}, "size"),
], ids=["vm-disk", "vm-memory", "volume-size"])
def test_sizes_beyond_what_a_host_or_the_database_holds_are_a_422_naming_the_field(
        engine: tuple[TestClient, EngineContext], path: str, body: dict[str, Any],
        field: str, size: object) -> None:
    client, ctx = engine
    before = _made(ctx)
    resp = client.post(path, json={**body, field: size})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert (error["field"] == field and "largest" in error["message"]) or \
        "not a size" in error["message"], error
    assert _made(ctx) == before


@pytest.mark.parametrize("value", [2**32, 2**63, 2**70, -1, 0])
@pytest.mark.parametrize(("path", "field", "extra"), [
    ("/api/v1/vms", "cpus", {"name": "a", "image": "tiny"}),
    ("/api/v1/networks", "vlan", {"name": "n", "mode": "isolated"}),
    ("/api/v1/networks", "vni", {"name": "n", "mode": "isolated", "overlay": "vxlan"}),
    ("/api/v1/vms/web/nics", "inbound_kbps", {"network": "default"}),
    ("/api/v1/security-groups/none/rules", "port_min",
     {"direction": "ingress", "protocol": "tcp"}),
])
def test_counts_and_ports_out_of_range_are_a_422(
        engine: tuple[TestClient, EngineContext], path: str, field: str,
        extra: dict[str, Any], value: int) -> None:
    client, ctx = engine
    before = _made(ctx)
    resp = client.post(path, json={**extra, field: value})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert _made(ctx) == before


@pytest.mark.parametrize("timeout", ["nan", "inf", "1e400", "-1"])
def test_a_wait_timeout_that_is_no_number_of_seconds_is_a_422(
        engine: tuple[TestClient, EngineContext], timeout: str) -> None:
    client, _ctx = engine
    resp = client.get("/api/v1/operations/x/wait", params={"timeout": timeout})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "timeout"


def test_a_root_disk_larger_than_its_pool_is_refused_like_a_volume(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    before = _made(ctx)
    too_big = f"{(FREE >> 30) + 1}G"
    for path, body, field in [
        ("/api/v1/vms", {"name": "big", "image": "tiny", "disk": too_big}, "disk"),
        ("/api/v1/storage/pools/default/volumes", {"name": "big", "size": too_big}, "size"),
    ]:
        resp = client.post(path, json=body)
        assert resp.status_code == 409, resp.text
        error = resp.json()["error"]
        assert (error["code"], error["field"]) == ("insufficient_resources", field)
        assert "too full" in error["message"] and "MiB free" in error["message"]
    assert _made(ctx) == before
    fits = client.post("/api/v1/vms", json={"name": "fits", "image": "tiny",
                                             "disk": f"{FREE >> 30}G"})
    assert fits.status_code == 202, fits.text


def test_thin_provisioning_overcommit_lets_a_larger_disk_in(tmp_path: Path) -> None:
    client, ctx = _engine(tmp_path, storage_overcommit=4.0)
    try:
        disk = f"{3 * FREE >> 30}G"
        resp = client.post("/api/v1/vms", json={"name": "thin", "image": "tiny", "disk": disk})
        assert resp.status_code == 202, resp.text
        over = client.post("/api/v1/vms", json={"name": "over", "image": "tiny",
                                                 "disk": f"{5 * FREE >> 30}G"})
        assert over.status_code == 409 and "4x overcommit" in over.json()["error"]["message"]
    finally:
        ctx.ops.shutdown()


@pytest.mark.parametrize("text", ["a\x00b", "\x01", "bell\x07", "\ud800", "\ufffe"],
                         ids=["nul", "soh", "bel", "surrogate", "fffe"])
@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/vms/web/snapshots", {"name": "s1"}, "description"),
    ("/api/v1/security-groups", {"name": "g"}, "description"),
    ("/api/v1/vms", {"name": "a", "image": "tiny", "cloud_init": {}}, "cloud_init.user_data"),
    ("/api/v1/vms", {"name": "a", "image": "tiny", "cloud_init": {}}, "cloud_init.hostname"),
])
def test_text_that_xml_cannot_hold_is_a_422_before_any_operation(
        engine: tuple[TestClient, EngineContext], path: str, body: dict[str, Any],
        field: str, text: str) -> None:
    client, ctx = engine
    before = _made(ctx)
    *outer, leaf = field.split(".")
    sent: dict[str, Any] = {**body}
    target = sent
    for key in outer:
        target[key] = dict(target[key])
        target = target[key]
    target[leaf] = f"#cloud-config\n{text}" if leaf == "user_data" else text
    resp = client.post(path, content=_json_with_raw_text(sent),
                       headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert _made(ctx) == before


def _json_with_raw_text(body: dict[str, Any]) -> bytes:
    """JSON with lone surrogates escaped as \\uD800 (json.dumps does that; encoding the
    str itself would fail)."""
    import json

    return json.dumps(body).encode()


def test_an_executor_bug_is_reported_without_python_internals(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine

    def broken(_op: Any) -> None:
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, no NULL bytes")

    ctx.ops.register("test.broken", broken)
    op = ctx.ops.submit("test.broken", {}, {})
    done = client.get(f"/api/v1/operations/{op.id}/wait", params={"timeout": 10}).json()
    assert done["status"] == "failure"
    assert done["error"]["code"] == "internal"
    assert "ValueError" not in done["message"] and "XML compatible" not in done["message"]
    assert op.id in done["message"] and "log" in done["message"]
