"""The API's edges hold: bodies are bounded (413), every string of a request is bounded and
unknown fields are refused (422 naming them), and the HTTPS server speaks TLS 1.2 or newer
only.

The engine runs for real (SQLite, routes, services) over a stand-in host; TLS is checked
with real handshakes against uvicorn on loopback.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import QuickHost, serving
from engine_seed import seed_node
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent import image_files
from corral.agent.jobs import JobRunner
from corral.agent.storage import Storage
from corral.api.models import TEXT_MAX
from corral.engine import body_limit, server_tls
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.services.auth import create_token
from corral.engine.tls import ensure_tls
from corral.httpserve import BodyLimit, install_error_handlers

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, EngineContext]]:
    data: Path = tmp_path_factory.mktemp("hardening")
    ctx = build_context(EngineSettings(data_dir=data, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(QuickHost())
    with ctx.db.session() as s:
        seed_node(s, str(data), str(data))
    token = create_token(ctx, "admin")
    try:
        with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as c:
            yield c, ctx
    finally:
        ctx.ops.shutdown()


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:500]
    error: dict[str, Any] = resp.json()["error"]
    return error


def _over(limit: int) -> bytes:
    """A JSON body of a VM create one byte over ``limit``."""
    head, tail = b'{"name": "big", "image": "tiny", "description": "', b'"}'
    return head + b"x" * (limit + 1 - len(head) - len(tail)) + tail


# -- bodies ---------------------------------------------------------------------------------

def test_a_body_over_one_mib_is_refused_with_413(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    error = _error(client.post("/api/v1/vms", content=_over(body_limit.DEFAULT), headers=JSON),
                   413)
    assert error["field"] == "body" and "larger than 1 MiB" in error["message"]


def test_a_chunked_body_over_the_limit_is_refused_as_it_comes(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    big = _over(body_limit.DEFAULT)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the middleware counts
        for start in range(0, len(big), 64 << 10):
            yield big[start:start + (64 << 10)]

    error = _error(client.post("/api/v1/vms", content=chunks(), headers=JSON), 413)
    assert error["field"] == "body"


def test_a_body_under_the_limit_reaches_the_route(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    body = _over(body_limit.DEFAULT - 100)
    error = _error(client.post("/api/v1/vms", content=body, headers=JSON), 422)
    assert error["field"] == "description"  # the model's own limit, not the body's


def test_routes_that_carry_files_take_more(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    content = "A" * ((1 << 20) + (100 << 10))  # 1.1 MiB of base64, not valid as such
    resp = client.post("/api/v1/vms/nosuchvm/customize", json={
        "files": [{"path": "/etc/motd", "content": content}]})
    assert resp.status_code != 413, resp.text[:300]
    assert resp.status_code in (404, 422)


def test_an_upload_that_streams_is_not_limited(tmp_path: Path) -> None:
    """The agent's image file copy streams its body (bounded by its announced size): the
    body limit of the app does not apply to it, and does to the rest."""
    storage = Storage(tmp_path / "storage")
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(image_files.router(storage, JobRunner()))
    app.add_middleware(BodyLimit, limit=1 << 20, routes=(image_files.UPLOAD,))
    data = os.urandom(3 << 20)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 256 << 10):
            yield data[i:i + (256 << 10)]

    with TestClient(app) as client:
        resp = client.put("/v1/images/tiny/files/qcow2", content=chunks(), params={
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        assert resp.status_code == 200, resp.text[:300]
        assert (storage.images / "tiny.qcow2").read_bytes() == data
        other = client.put("/v1/images/tiny/files", content=data)
        assert other.status_code == 413


def test_the_agent_upload_pattern_matches_its_route() -> None:
    paths = [getattr(r, "path", "") for r in image_files.router(Storage(Path("/nonexistent")),
                                                                 JobRunner()).routes]
    upload = "/v1/images/{name}/files/{kind}"
    assert upload in paths
    method, pattern, limit = image_files.UPLOAD
    assert method == "PUT" and limit is None
    assert pattern.fullmatch("/v1/images/tiny/files/qcow2")
    assert not pattern.fullmatch("/v1/images/tiny/files")


# -- fields ---------------------------------------------------------------------------------

def test_an_unknown_field_is_refused_naming_it(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    error = _error(client.post("/api/v1/networks", json={
        "name": "lan", "subnet": "10.9.0.0/24", "colour": "blue"}), 422)
    assert error["field"] == "colour"
    assert error["message"].startswith("colour: unknown field")
    nested = _error(client.post("/api/v1/vms", json={
        "name": "v", "image": "tiny", "cloud_init": {"hostname": "v", "userdata": "x"}}), 422)
    assert nested["field"] == "cloud_init.userdata"


def test_an_over_long_name_is_refused_naming_the_field(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    error = _error(client.post("/api/v1/networks", json={"name": "n" * 64,
                                                          "subnet": "10.9.0.0/24"}), 422)
    assert error["field"] == "name" and "63" in error["message"]


def test_any_other_string_is_bounded_too(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ctx = engine
    error = _error(client.post("/api/v1/images", json={
        "name": "img", "source": "/srv/" + "a" * TEXT_MAX}), 422)
    assert error["field"] == "source"
    assert error["message"] == f"source: longer than {TEXT_MAX} characters"


def _strings_without_limit(schema: dict[str, Any], comps: dict[str, Any], where: str,
                           seen: set[str]) -> list[str]:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen.add(name)
        return _strings_without_limit(comps[name], comps, name, seen)
    found = []
    if schema.get("type") == "string" and not ({"maxLength", "enum", "const"} & set(schema)):
        found.append(where)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found += _strings_without_limit(sub, comps, where, seen)
    if isinstance(schema.get("items"), dict):
        found += _strings_without_limit(schema["items"], comps, f"{where}[]", seen)
    for prop, sub in schema.get("properties", {}).items():
        found += _strings_without_limit(sub, comps, f"{where}.{prop}", seen)
    if isinstance(schema.get("additionalProperties"), dict):
        found += _strings_without_limit(schema["additionalProperties"], comps, f"{where}{{}}",
                                        seen)
    return found


def test_every_string_of_every_request_body_has_a_limit(
        engine: tuple[TestClient, EngineContext]) -> None:
    """As the OpenAPI document says it (what clients and the fuzzer see), for every body of
    every route but the agents' own report (the agent protocol: corral.agent_api)."""
    client, _ctx = engine
    spec = client.get("/openapi.json").json()
    comps = spec["components"]["schemas"]
    unbounded, bodies = [], 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for content in op.get("requestBody", {}).get("content", {}).values():
                if path == "/api/v1/agent/report":
                    continue
                bodies += 1
                unbounded += [f"{method.upper()} {path}: {w}" for w in _strings_without_limit(
                    content["schema"], comps, "body", set())]
    assert bodies > 20
    assert unbounded == []


# -- TLS --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A tiny app served with the engine's TLS settings; (port, corral's CA)."""
    ca, cert, key = ensure_tls(tmp_path_factory.mktemp("tls"))
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    tls = server_tls.server_context(cert, key, ca)
    with serving(app, ssl_context_factory=lambda _cfg, _default: tls) as url:
        yield int(url.rsplit(":", 1)[1]), ca


def _handshake(port: int, ca: Path, version: ssl.TLSVersion) -> str:
    """The version a client limited to ``version`` agreed on (raises if refused)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client itself would speak old TLS
    ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        return str(conn.version())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_and_older_are_refused(https: tuple[int, Path], tmp_path: Path) -> None:
    port, ca = https
    for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        with pytest.raises(ssl.SSLError):
            _handshake(port, ca, old)
    # The refusal is the server's: a server that allows TLS 1.1 gets it from this client.
    ca2, cert, key = ensure_tls(tmp_path)
    lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lenient.load_cert_chain(str(cert), str(key))
    lenient.set_ciphers("DEFAULT:@SECLEVEL=0")
    lenient.minimum_version = ssl.TLSVersion.TLSv1
    with serving(FastAPI(), ssl_context_factory=lambda _cfg, _default: lenient) as url:
        assert _handshake(int(url.rsplit(":", 1)[1]), ca2, ssl.TLSVersion.TLSv1_1) == "TLSv1.1"


def test_tls_1_2_and_1_3_are_served(https: tuple[int, Path]) -> None:
    port, ca = https
    assert _handshake(port, ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(port, ca, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    resp = httpx.get(f"https://127.0.0.1:{port}/ping", verify=ssl.create_default_context(
        cafile=str(ca)), timeout=10)
    assert resp.json() == {"ok": True}


def test_the_servers_contexts_ask_for_tls_1_2_at_least(tmp_path: Path) -> None:
    ca, cert, key = ensure_tls(tmp_path)
    assert server_tls.server_context(cert, key, ca).minimum_version == ssl.TLSVersion.TLSv1_2
