"""The API as its OpenAPI document describes it, probed by schemathesis: for every operation
of the engine, requests generated from the schema (valid ones and broken ones) never get a
5xx, and every answer — status, content type, body, headers — is one the document declares.

The engine runs for real (uvicorn on loopback, SQLite, every route and service) over a
stand-in host (tests/unit/api_server.QuickHost); its database starts with a VM, a network,
a pool and a volume so that lookups of generated names hit something now and then.
Bounded: ``EXAMPLES`` per operation, derandomized (the same requests every run). Each
operation is probed as an admin and as a viewer (whose refusals are 403s).

Every check of schemathesis runs but one: a schema-valid request may still be refused
with a 422, because some rules span fields (an image or an ISO, not both) or sizes are
strings ("512M") that JSON Schema does not spell out; the reverse holds: whatever the
schema refuses, the API refuses (negative_data_rejection).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from api_server import QuickHost, serving
from engine_seed import seed_node
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, StoragePool, Vm, Volume
from corral.engine.services import users
from corral.engine.services.auth import create_token

EXAMPLES = 25
# Answers that never end (a client reads them until it leaves): tests/unit/test_events.py
ENDLESS = {"/api/v1/events"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, EngineContext]]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    ctx = build_context(EngineSettings(data_dir=data, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(QuickHost())
    with ctx.db.session() as s:
        host = seed_node(s, str(data), str(data))
        pool = StoragePool(name="default", type="dir", path=str(data), host_id=host.id,
                           status="ready")
        s.add(pool)
        s.flush()
        s.add(Volume(pool_id=pool.id, name="vol", format="qcow2", size=1 << 30, status="ready"))
        image = s.query(Image).filter_by(name="tiny").one()
        s.add(Vm(name="web", image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="stopped"))
    token = create_token(ctx, "fuzz")
    try:
        with serving(create_app(ctx)) as url:
            yield url, token, ctx
    finally:
        ctx.ops.shutdown()


def _operations() -> list[str]:
    """Every operation of the engine's OpenAPI document, as METHOD /path."""
    with tempfile.TemporaryDirectory() as data:
        ctx = build_context(EngineSettings(data_dir=Path(data)))
        spec = create_app(ctx).openapi()
        ctx.ops.shutdown()
    return [f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops
            if path not in ENDLESS]


@pytest.fixture(scope="module")
def api_schema(engine: tuple[str, str, EngineContext]) -> Any:
    url, _token, _ctx = engine
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.fixture(scope="module")
def viewer_token(engine: tuple[str, str, EngineContext]) -> str:
    """A read-only user's token: its refusals (403) must match the document too."""
    _url, _token, ctx = engine
    users.create(ctx, "fuzzviewer", "viewer", None)
    return create_token(ctx, "fuzz", "viewer", user="fuzzviewer")


@pytest.mark.parametrize("role", ["admin", "viewer"])
@pytest.mark.parametrize("label", _operations())
def test_every_operation_answers_as_its_schema_says_and_never_5xx(
        engine: tuple[str, str, EngineContext], api_schema: Any, viewer_token: str,
        label: str, role: str) -> None:
    url, admin_token, _ctx = engine
    token = admin_token if role == "admin" else viewer_token
    method, path = label.split(" ", 1)
    operation = api_schema[path][method].ok() if hasattr(api_schema[path][method], "ok") \
        else api_schema[path][method]

    @given(operation.as_strategy())
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def probe(case: Any) -> None:
        case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"},
                               timeout=30, excluded_checks=[positive_data_acceptance])

    probe()
