"""One host's live memory and its KSM switch: the agent's sysfs side (on a stand-in
/sys/kernel/mm/ksm) and the engine's API (`GET/PATCH /api/v1/hosts/{name}`) over a stand-in
agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.agent import host_memory
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.errors import WrongState

# -- the agent: /sys/kernel/mm/ksm -------------------------------------------------------


@pytest.fixture()
def ksm_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "ksm"
    d.mkdir()
    (d / "run").write_text("0\n")
    (d / "pages_sharing").write_text("2560\n")  # 10 MiB of 4 KiB pages
    monkeypatch.setattr(host_memory, "KSM_DIR", d)
    return d


def test_ksm_on_merges_and_off_splits_the_merged_pages_again(ksm_dir: Path) -> None:
    assert host_memory.ksm_state() == (False, 10)
    host_memory.set_ksm(True)
    assert (ksm_dir / "run").read_text() == "1"
    assert host_memory.ksm_state() == (True, 10)
    host_memory.set_ksm(False)
    assert (ksm_dir / "run").read_text() == "2"  # 2: unmerge, not 0 (stop, keep merged)
    assert host_memory.ksm_state()[0] is False


def test_a_kernel_without_ksm_says_so_and_refuses_it(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_memory, "KSM_DIR", tmp_path / "absent")
    assert host_memory.ksm_state() == (None, 0)
    with pytest.raises(WrongState, match="offers no KSM"):
        host_memory.set_ksm(True)


# -- the engine: /api/v1/hosts/{name} ------------------------------------------------------


class Agent:
    def __init__(self) -> None:
        self.ksm = False
        self.calls: list[tuple[str, str, Any]] = []
        self.down = False

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused")
        body = json.loads(req.content) if req.content else None
        self.calls.append((req.method, req.url.path, body))
        if req.url.path == "/v1/host/ksm":
            self.ksm = body["on"]
        return httpx.Response(200, json={"total_mib": 4096, "available_mib": 3000,
                                         "ksm": self.ksm, "ksm_saved_mib": 12,
                                         "vms_booted_mib": 512, "vms_balloon_mib": 384})


@pytest.fixture()
def agent() -> Agent:
    return Agent()


@pytest.fixture()
def client(tmp_path: Path, agent: Agent) -> Iterator[TestClient]:
    ctx: EngineContext = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(agent)
    with ctx.db.session() as s:
        seed_node(s, str(tmp_path / "storage"), str(tmp_path))
    try:
        yield admin_client(ctx)
    finally:
        ctx.ops.shutdown()


def test_show_has_the_hosts_memory_now(client: TestClient) -> None:
    shown = client.get("/api/v1/hosts/h1").json()
    assert shown["name"] == "h1" and shown["cpus"] == 2
    assert shown["memory"] == {"total_mib": 4096, "available_mib": 3000, "ksm": False,
                               "ksm_saved_mib": 12, "vms_booted_mib": 512,
                               "vms_balloon_mib": 384}


def test_a_host_that_does_not_answer_is_shown_without_memory(client: TestClient,
                                                             agent: Agent) -> None:
    agent.down = True
    shown = client.get("/api/v1/hosts/h1")
    assert shown.status_code == 200 and shown.json()["memory"] is None


def test_ksm_is_switched_by_an_operation(client: TestClient, agent: Agent) -> None:
    resp = client.patch("/api/v1/hosts/h1", json={"ksm": True})
    assert resp.status_code == 202, resp.text
    op = client.get(f"/api/v1/operations/{resp.json()['id']}/wait",
                    params={"timeout": 30}).json()
    assert op["status"] == "success" and op["type"] == "host.update", op
    assert agent.calls[-1] == ("PUT", "/v1/host/ksm", {"on": True})
    assert client.get("/api/v1/hosts/h1").json()["memory"]["ksm"] is True


@pytest.mark.parametrize("body, status", [({}, 422), ({"ksm": "maybe"}, 422),
                                          ({"ksm": True, "other": 1}, 422)])
def test_bad_changes_are_422s_and_touch_nothing(client: TestClient, agent: Agent,
                                                body: dict[str, Any], status: int) -> None:
    assert client.patch("/api/v1/hosts/h1", json=body).status_code == status
    assert agent.calls == []


def test_an_unknown_host_is_a_404(client: TestClient, agent: Agent) -> None:
    assert client.get("/api/v1/hosts/nope").status_code == 404
    assert client.patch("/api/v1/hosts/nope", json={"ksm": True}).status_code == 404
    assert agent.calls == []
