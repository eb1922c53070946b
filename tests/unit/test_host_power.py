"""`corral host reboot|shutdown` in the engine, with a stand-in agent: the power command
asked of the host's agent, a reboot waited for until the agent answers with another start
id, a shutdown until it stops answering, the host kept in maintenance (or activated with
``return_vms``), and the refusals: a host that cannot be asked, VMs still running on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Vm
from corral.engine.services import host_power
from corral.engine.services.auth import create_token

FACTS = {"hostname": "h1", "agent_version": "9.9", "cpus": 2, "memory_mib": 4096,
         "virt_type": "qemu", "libvirt_version": "9.0.0", "storage_dir": "/s",
         "console_dir": "/c", "storage_free": 1 << 30}


@dataclass
class Machine:
    """The stand-in agent of h1: ``down_polls`` power-state polls fail after a power command,
    then a rebooted agent answers with a new start id (a shut down one never does)."""

    start_id: str = "first"
    down_polls: int = 3
    sent: list[str] = field(default_factory=list)
    polls_down: int = 0

    def __call__(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if self.sent and path in ("/v1/host/power", "/v1/host"):
            if self.sent[-1] == "poweroff" or self.polls_down < self.down_polls:
                self.polls_down += 1
                raise httpx.ConnectError("connection refused", request=req)
            self.start_id = "second"
        if path == "/v1/host/power" and req.method == "POST":
            self.sent.append(json.loads(req.content)["action"])
            command = ["systemctl", "reboot" if self.sent[-1] == "reboot" else "poweroff"]
            return httpx.Response(200, json={"start_id": self.start_id, "command": command})
        if path == "/v1/host/power":
            return httpx.Response(200, json={"start_id": self.start_id, "command": []})
        if path == "/v1/host":
            return httpx.Response(200, json=FACTS)
        if path == "/v1/domains":
            return httpx.Response(200, json=[])
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


@dataclass
class Engine:
    ctx: EngineContext
    client: TestClient
    machine: Machine

    def run(self, action: str, expect: str = "success", **body: Any) -> dict[str, Any]:
        resp = self.client.post(f"/api/v1/hosts/h1/{action}", json=body)
        assert resp.status_code == 202, resp.text
        done = self.ctx.ops.wait(resp.json()["id"], timeout=30).model_dump(mode="json")
        assert done["status"] == expect, done
        return done

    def status(self) -> str:
        with self.ctx.db.session() as s:
            return s.query(Host).filter_by(name="h1").one().status


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setattr(host_power, "POLL_S", 0.02)
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    machine = Machine()
    ctx.agent_transport = httpx.MockTransport(machine)
    with ctx.db.session() as s:
        s.add(Host(name="h1", url="https://127.0.0.1:8444", status="maintenance",
                   facts=dict(FACTS)))
    token = create_token(ctx, "admin")
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"})
    try:
        yield Engine(ctx, client, machine)
    finally:
        ctx.ops.shutdown()


def test_a_reboot_waits_for_the_agent_to_start_again(engine: Engine) -> None:
    done = engine.run("reboot")
    assert engine.machine.sent == ["reboot"] and engine.machine.polls_down == 3
    assert "rebooted" in done["message"] and "maintenance" in done["message"]
    assert engine.status() == "maintenance"


def test_a_reboot_with_return_activates_the_host(engine: Engine) -> None:
    done = engine.run("reboot", return_vms=True)
    assert "rebooted and active" in done["message"]
    assert engine.status() == "up"


def test_a_shutdown_ends_when_the_agent_is_gone(engine: Engine) -> None:
    done = engine.run("shutdown")
    assert engine.machine.sent == ["poweroff"]
    assert "is off" in done["message"] and engine.status() == "maintenance"


def test_a_host_that_cannot_be_asked_and_return_on_shutdown_are_refused(
        engine: Engine) -> None:
    with engine.ctx.db.session() as s:
        s.query(Host).filter_by(name="h1").one().status = "unresponsive"
    resp = engine.client.post("/api/v1/hosts/h1/reboot", json={})
    assert resp.status_code == 409 and "h1 is unresponsive" in resp.json()["error"]["message"]
    with engine.ctx.db.session() as s:
        s.query(Host).filter_by(name="h1").one().status = "maintenance"
    resp = engine.client.post("/api/v1/hosts/h1/shutdown", json={"return_vms": True})
    assert resp.status_code == 409 and resp.json()["error"]["field"] == "return_vms"
    assert engine.client.post("/api/v1/hosts/h9/reboot", json={}).status_code == 404
    assert not engine.machine.sent


def test_vms_still_running_on_the_host_stop_it_without_force(engine: Engine) -> None:
    with engine.ctx.db.session() as s:
        image = Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=1 << 20)
        s.add(image)
        s.flush()
        s.add(Vm(name="left", image_id=image.id,
                 host_id=s.query(Host).filter_by(name="h1").one().id, cpus=1,
                 memory_mib=64, disk_bytes=64 << 20, state="running",
                 desired_power="running"))
    done = engine.run("reboot", expect="failure")
    assert "VMs still run on host h1: left" in done["error"]["message"]
    assert not engine.machine.sent  # the machine was never asked
    engine.run("reboot", force=True)
    assert engine.machine.sent == ["reboot"]
