"""The event stream shows a reader what it may see: a user of project b hears of its own
VM's operation and never of project a's, which came first; an engine-wide reader hears of
both."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from api_server import QuickHost, serving
from engine_seed import seed_node
from event_stream import operation_events

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineSettings
from corral.engine.db.models import Image, Network, Project, RoleAssignment, User
from corral.engine.services.auth import create_token


def test_a_project_user_hears_only_of_its_project(tmp_path: Path) -> None:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(QuickHost())
    with ctx.db.session() as s:
        seed_node(s, str(tmp_path), str(tmp_path))
        s.add_all([Project(name="a"), Project(name="b")])
        s.flush()
        for user, project in (("alice", "a"), ("bob", "b")):
            s.add(User(name=user, role="none"))
            s.add(RoleAssignment(subject_kind="user", subject=user, role="user",
                                 project=project))
        s.query(Image).update({"shared": True})
        s.query(Network).update({"shared": True})
    alice = {"Authorization": f"Bearer {create_token(ctx, 'a', 'admin', user='alice')}"}
    bob = {"Authorization": f"Bearer {create_token(ctx, 'b', 'admin', user='bob')}"}
    admin = {"Authorization": f"Bearer {create_token(ctx, 'events')}"}
    body = {"name": "web", "image": "tiny", "memory": "64M"}
    try:
        with serving(create_app(ctx)) as url, httpx.Client(base_url=url, timeout=10) as c, \
                c.stream("GET", "/api/v1/events?project=*", headers=bob) as theirs, \
                c.stream("GET", "/api/v1/events", headers=admin) as everyone:
            bob_lines, all_lines = theirs.iter_lines(), everyone.iter_lines()
            assert next(bob_lines) == ": connected" and next(all_lines) == ": connected"
            first = c.post("/api/v1/vms?project=a", json=body, headers=alice)
            second = c.post("/api/v1/vms?project=b", json=body, headers=bob)
            assert first.status_code == second.status_code == 202, first.text
            deadline = time.monotonic() + 10
            heard = operation_events(bob_lines, second.json()["id"], deadline)
            assert {e["project"] for e in heard} == {"b"}
            assert first.json()["id"] not in {e["data"]["id"] for e in heard}
            heard_all = operation_events(all_lines, second.json()["id"], deadline)
            assert {"a", "b"} <= {e["project"] for e in heard_all}
    finally:
        ctx.ops.shutdown()
