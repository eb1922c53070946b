"""A VM create that fails at any step leaves nothing: no domain, disk, seed or port on the
host, no row in the engine. The host is an httpx.MockTransport standing in for the agent's
HTTP API (the engine's real AgentClient talks to it), keeping what a real agent would hold;
a step fails with the answer an agent gives (500) or with no answer (connection refused)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Nic, Vm


class Host:
    """What the agent keeps, and which request fails (``fail``: "METHOD /path regex")."""

    def __init__(self) -> None:
        self.domains: dict[str, str] = {}  # name -> state
        self.disks: set[str] = set()
        self.seeds: set[str] = set()
        self.ports: set[str] = set()
        self.fail: str | None = None
        self.refuse = False  # fail by not answering instead
        self.seen: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        what = f"{req.method} {req.url.path}"
        self.seen.append(what)
        if self.fail and re.fullmatch(self.fail, what):
            if self.refuse:
                raise httpx.ConnectError("connection refused", request=req)
            return httpx.Response(500, json={"error": {"code": "host_error",
                                                       "message": f"{what} broke"}})
        return self._answer(req.method, req.url.path.split("/")[2:])

    def _answer(self, method: str, parts: list[str]) -> httpx.Response:
        kind, name, rest = parts[0], parts[1] if len(parts) > 1 else "", parts[2:]
        store = {"disks": self.disks, "seeds": self.seeds, "ports": self.ports}.get(kind)
        if kind == "domains" and not rest:
            if method == "PUT":
                self.domains[name] = "stopped"
            elif method == "DELETE":
                return _json({"deleted": self.domains.pop(name, None) is not None})
            return _json(self._domain(name))
        if kind == "domains" and rest in (["start"], ["destroy"]):
            if name in self.domains:
                self.domains[name] = "running" if rest == ["start"] else "stopped"
            return _json(self._domain(name))
        if store is not None and method == "PUT":
            store.add(name)
            return _json({"path": f"/s/{name}", "created": True, "size": 1, "tap": name,
                          "id": len(store)})
        if store is not None and method == "DELETE":
            store.discard(name)
            return _json({"deleted": True})
        if kind == "networks" and rest == ["leases"]:
            return _json([])
        if kind == "images" and rest == ["files"]:  # the image is on this host (1 MiB)
            return _json({"files": [{"kind": "qcow2", "size": 1 << 20}]})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})

    def _domain(self, name: str) -> dict[str, Any]:
        return {"name": name, "uuid": name, "vm_id": None,
                "state": self.domains.get(name, "stopped")}


def _json(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext, Host]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    host = Host()
    ctx.agent_transport = httpx.MockTransport(host)
    with ctx.db.session() as s:
        seed_node(s, str(tmp_path), str(tmp_path))
    client = admin_client(ctx)
    yield client, ctx, host
    ctx.ops.shutdown()


def _create(client: TestClient, **extra: Any) -> dict[str, Any]:
    body = {"name": "web", "image": "tiny", "memory": "128M", "start": True, **extra}
    resp = client.post("/api/v1/vms", json=body)
    assert resp.status_code == 202, resp.text
    op: dict[str, Any] = client.get(f"/api/v1/operations/{resp.json()['id']}/wait",
                                    params={"timeout": 30}).json()
    return op


WITH_SEED = {"cloud_init": {"user_data": "#cloud-config\n{}\n"}}
STEPS = ["GET /v1/images/tiny/files",  # is the image on the host (else it is copied)
         "PUT /v1/disks/web", "PUT /v1/seeds/web", "PUT /v1/ports/.*", "PUT /v1/domains/web",
         "POST /v1/domains/web/start"]


@pytest.mark.parametrize("refuse", [False, True], ids=["answered-500", "no-answer"])
@pytest.mark.parametrize("step", STEPS)
def test_a_create_failing_at_any_step_leaves_nothing(
        engine: tuple[TestClient, EngineContext, Host], step: str, refuse: bool) -> None:
    client, ctx, host = engine
    host.fail, host.refuse = step, refuse
    op = _create(client, **WITH_SEED)
    assert op["status"] == "failure", op
    assert any(s for s in host.seen if re.fullmatch(step, s)), "the step was reached"
    assert (host.domains, host.disks, host.seeds, host.ports) == ({}, set(), set(), set())
    with ctx.db.session() as s:
        assert s.query(Vm).count() == 0 and s.query(Nic).count() == 0
    assert client.get("/api/v1/vms/web").status_code == 404
    # and the name is free again: the same create succeeds once the host does
    host.fail = None
    assert _create(client, **WITH_SEED)["status"] == "success"
    assert host.domains == {"web": "running"} and host.disks == {"web"}


def test_a_create_that_succeeds_leaves_one_of_each(
        engine: tuple[TestClient, EngineContext, Host]) -> None:
    client, _ctx, host = engine
    assert _create(client, **WITH_SEED)["status"] == "success"
    assert (host.domains, host.disks, host.seeds) == ({"web": "running"}, {"web"}, {"web"})
    assert len(host.ports) == 1
    assert client.get("/api/v1/vms/web").json()["state"] == "running"
