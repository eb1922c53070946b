"""Image import and customization at the API edge: 4xx naming the field, nothing half-made.

A real engine (SQLite, routes, services) whose one host points to an agent address that
nothing listens on (as in test_api_edge.py).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Operation, Vm
from corral.engine.services.auth import create_token


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        host = Host(name="h1", url="http://127.0.0.1:9", status="up",
                    facts={"memory_mib": 4096, "cpus": 2, "storage_dir": str(tmp_path)})
        s.add(host)
        for name, fmt in (("tiny", "qcow2"), ("free", "qcow2"), ("cd", "iso")):
            s.add(Image(name=name, status="ready", format=fmt, virtual_size=64 << 20))
        s.flush()
        tiny = s.query(Image).filter_by(name="tiny").one()
        s.add(Vm(name="busy", image_id=tiny.id, host_id=host.id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="running",
                 desired_power="running"))
        s.add(Vm(name="idle", image_id=tiny.id, host_id=host.id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="stopped",
                 desired_power="stopped"))
    token = create_token(ctx, "admin")
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"})
    yield client, ctx
    ctx.ops.shutdown()


def _ops(ctx: EngineContext) -> int:
    with ctx.db.session() as s:
        return s.query(Operation).count()


def _status(ctx: EngineContext, name: str) -> str | None:
    with ctx.db.session() as s:
        img = s.query(Image).filter_by(name=name).one_or_none()
        return None if img is None else img.status


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"hostname": "bad host"}, "hostname", "not a valid host name"),
    ({}, None, "nothing to do"),
    ({"passwords": [{"user": "ro ot", "password": "x"}]}, "passwords.0.user", "user name"),
    ({"files": [{"path": "/etc/x", "content": "%%%"}]}, "files.0.content", "base64"),
    ({"commands": ["true"], "extra": 1}, "extra", "unknown field"),
])
def test_bad_customize_requests(engine: tuple[TestClient, EngineContext], body: dict[str, object],
                                field: str | None, words: str) -> None:
    client, ctx = engine
    for path in ("/api/v1/images/free/customize", "/api/v1/vms/idle/customize"):
        resp = client.post(path, json=body)
        assert resp.status_code == 422, resp.text
        err = resp.json()["error"]
        assert words in err["message"]
        if field:
            assert err.get("field") == field
    assert _ops(ctx) == 0 and _status(ctx, "free") == "ready"


def test_customize_refusals(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    body = {"hostname": "web", "files": [{"path": "/etc/motd",
                                          "content": base64.b64encode(b"hi").decode()}]}
    resp = client.post("/api/v1/vms/busy/customize", json=body)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "wrong_state"
    assert "it is running; stop it first" in resp.json()["error"]["message"]
    resp = client.post("/api/v1/images/tiny/customize", json=body)
    assert resp.status_code == 409 and "base of VMs busy, idle" in resp.json()["error"]["message"]
    resp = client.post("/api/v1/images/cd/customize", json=body)
    assert resp.status_code == 422 and "is an ISO" in resp.json()["error"]["message"]
    for path in ("/api/v1/images/nope/customize", "/api/v1/vms/nope/customize"):
        assert client.post(path, json=body).status_code == 404
    assert _ops(ctx) == 0
    assert _status(ctx, "tiny") == "ready" and _status(ctx, "cd") == "ready"


def test_customize_of_an_image_fails_cleanly_when_the_agent_is_away(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    resp = client.post("/api/v1/images/free/customize",
                       json={"hostname": "web", "passwords": [{"user": "root", "password": "pw1"}]})
    assert resp.status_code == 202
    op = client.get(f"/api/v1/operations/{resp.json()['id']}/wait", params={"timeout": 30}).json()
    assert op["status"] == "failure" and "unreachable" in op["message"]
    assert _status(ctx, "free") == "ready"  # back from "customizing"
    with ctx.db.session() as s:
        params = s.get(Operation, op["id"]).params  # type: ignore[union-attr]
    assert "pw1" not in str(params) and params["spec"]["passwords"][0]["user"] == "root"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "source": "ftp://example.org/x.raw"}, "source"),
    ({"name": "x", "source": "http://"}, "source"),
    ({"name": "x", "source": "http://127.0.0.1/x.raw", "format": "zip"}, "format"),
    ({"name": "x", "source": "http://127.0.0.1/x.raw", "checksum": "sha256:12"}, "checksum"),
    ({"name": "x", "source": "http://127.0.0.1/x.raw", "checksum": "md5:" + "0" * 32}, "checksum"),
])
def test_bad_import_requests(engine: tuple[TestClient, EngineContext], body: dict[str, str],
                             field: str) -> None:
    client, ctx = engine
    resp = client.post("/api/v1/images", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert _ops(ctx) == 0 and _status(ctx, "x") is None


def test_url_import_that_fails_leaves_no_image(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    # TEST-NET-1, not loopback (refused at the edge: corral.safeurls); nothing connects to it
    resp = client.post("/api/v1/images", json={"name": "deb", "source": "http://192.0.2.10/d.raw",
                                               "checksum": "sha256:" + "a" * 64})
    assert resp.status_code == 202
    op = client.get(f"/api/v1/operations/{resp.json()['id']}/wait", params={"timeout": 30}).json()
    assert op["status"] == "failure" and "unreachable" in op["message"]
    assert _status(ctx, "deb") is None
