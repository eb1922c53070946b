"""/api/v1/events: a client that opens the stream hears of a change it did not make itself
(another client's VM create), as Server-Sent Events in corral's JSON."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from api_server import QuickHost, serving
from engine_seed import seed_node
from event_stream import operation_events

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineSettings
from corral.engine.services.auth import create_token


def test_the_event_stream_carries_another_clients_operation(tmp_path: Path) -> None:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(QuickHost())
    with ctx.db.session() as s:
        seed_node(s, str(tmp_path), str(tmp_path))
    auth = {"Authorization": f"Bearer {create_token(ctx, 'events')}"}
    try:
        with serving(create_app(ctx)) as url, httpx.Client(base_url=url, headers=auth,
                                                            timeout=10) as c:
            assert c.get("/api/v1/events", headers={"Authorization": "Bearer nope"},
                         timeout=5).status_code == 401
            with c.stream("GET", "/api/v1/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.iter_lines()
                assert next(lines) == ": connected"
                made = c.post("/api/v1/vms", json={"name": "seen", "image": "tiny",
                                                   "memory": "64M"})
                assert made.status_code == 202, made.text
                heard = operation_events(lines, made.json()["id"], time.monotonic() + 10)
                for event in heard:
                    assert event["time"].endswith("Z") or "+00:00" in event["time"]
                assert heard[-1]["data"]["type"] == "vm.create"
    finally:
        ctx.ops.shutdown()
