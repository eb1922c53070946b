"""What every answer of the API has in common, whichever layer gives it: one error shape
(corral's ``{"error": {...}}``, also for paths and methods no route has and for bodies
FastAPI cannot read), the statuses the OpenAPI document declares, and timestamps that
carry their time zone however they were stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        seed_node(s, str(tmp_path), str(tmp_path))
    client = admin_client(ctx)
    yield client, ctx
    ctx.ops.shutdown()


def _error(resp: object) -> dict[str, object]:
    body = resp.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("path", "allowed"), [
    ("/api/v1/vms", "GET, POST, HEAD"),
    ("/api/v1/vms/web", "GET, PATCH, DELETE, HEAD"),
    ("/api/v1/security-groups/g", "GET, DELETE, HEAD"),
])
def test_a_method_no_route_takes_is_a_405_naming_every_method_the_path_takes(
        engine: tuple[TestClient, EngineContext], path: str, allowed: str) -> None:
    client, _ctx = engine
    resp = client.options(path)
    assert resp.status_code == 405
    assert resp.headers["allow"] == allowed
    assert _error(resp)["code"] == "method_not_allowed"


def test_a_path_no_route_has_is_a_404_in_the_error_shape(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    resp = client.get("/api/v1/nothing-here")
    assert resp.status_code == 404 and _error(resp)["code"] == "not_found"


@pytest.mark.parametrize(("content", "ctype"), [
    (b"{not json", "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b"name=x", "application/x-www-form-urlencoded"),
    (b"[" * 100_000, "application/json"),
])
def test_a_body_that_cannot_be_read_is_a_4xx_in_the_error_shape(
        engine: tuple[TestClient, EngineContext], content: bytes, ctype: str) -> None:
    client, _ctx = engine
    resp = client.post("/api/v1/vms", content=content, headers={"content-type": ctype})
    assert 400 <= resp.status_code < 500, resp.text
    assert _error(resp)["field"] == "body"


def test_timestamps_read_back_from_the_database_carry_their_zone(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    made = client.post("/api/v1/vms", json={"name": "web", "image": "tiny", "memory": "64M"})
    assert made.status_code == 202
    listed = client.get("/api/v1/images").json()  # rows written by another session
    op = client.get("/api/v1/operations").json()[0]
    for stamp in [listed[0]["created_at"], op["created_at"], op["updated_at"]]:
        assert stamp.endswith("Z") or stamp.endswith("+00:00"), stamp


def test_every_operation_declares_the_errors_it_may_answer_in_the_error_shape(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    spec = client.get("/openapi.json").json()
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for status in ("401", "404", "409", "422", "500"):
                declared = op["responses"].get(status)
                assert declared, f"{method.upper()} {path} declares no {status}"
                assert declared["content"]["application/json"]["schema"] == ref
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    name = spec["components"]["schemas"]["VmCreate"]["properties"]["name"]
    assert name["pattern"] and name["maxLength"] == 63
