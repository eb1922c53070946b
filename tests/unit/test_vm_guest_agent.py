"""The guest agent, the watchdog, the video card and the VNC display through the API: `vm
show` says whether a running VM's agent answers (the list never asks the host), `vm exec`
hands back what the host's agent ran, and refuses clearly where it cannot; watchdog and
video are hardware like the rest (422s naming the field, the next start for a running VM).

The engine runs for real (SQLite, routes, services, operations) over a stand-in agent
(:class:`Host`) that answers as corral's agent does and notes every call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.api import VmVnc
from corral.cli.vm_agent import tunnel_lines
from corral.domainxml import Domain
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Vm
from corral.engine.services import vm_define, vm_design

NO_AGENT = ("the QEMU guest agent of VM web does not answer: qemu-guest-agent is not running "
            "in the guest")


class Host:
    """An agent whose domains are running or stopped; ``agent``: whether the guest agent of
    a domain answers; ``vnc_port``: the port its display got (None: no display)."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.agent: dict[str, bool] = {}
        self.vnc_port: dict[str, int | None] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.defined: dict[str, str] = {}

    def __call__(self, req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content) if req.content else None
        path = req.url.path
        self.calls.append((req.method, path, body))
        m = re.fullmatch(r"/v1/domains/([^/]+)(/.*)?", path)
        if m is None:
            return httpx.Response(200, json={"path": "/x", "size": 1, "deleted": True})
        name, sub = m.group(1), m.group(2)
        if sub == "/guest-agent":
            return httpx.Response(200, json={"answers": self.agent[name]})
        if sub == "/guest-agent/exec":
            if not self.agent[name]:
                return httpx.Response(409, json={"error": {"code": "conflict", "message": (
                    NO_AGENT.replace("web", name) + " (install and start it there)")}})
            argv = body["command"]
            return httpx.Response(200, json={"exit_code": 3, "stdout": " ".join(argv) + "\n",
                                             "stderr": "oops\n", "pid": 7})
        if sub == "/graphics":
            port = self.vnc_port.get(name)
            shown = [] if port is None else [{"type": "vnc", "port": port,
                                              "listen": "127.0.0.1"}]
            return httpx.Response(200, json=shown)
        if sub == "/resources":
            return httpx.Response(200, json={"vcpus": 1, "vcpus_max": 1, "memory_mib": 256,
                                             "balloon_mib": 256})
        if sub is None and req.method == "PUT":
            self.defined[name] = body["xml"]
        return httpx.Response(200, json={"name": name, "uuid": name,
                                         "state": self.state[name]})

    def asked(self, what: str) -> list[str]:
        return [p for _m, p, _b in self.calls if p.endswith(what)]


@pytest.fixture()
def host() -> Host:
    return Host()


@pytest.fixture()
def ctx(tmp_path: Path, host: Host) -> Iterator[EngineContext]:
    """``idle``: stopped; ``web``: running, its guest agent answers; ``bare``: running, no
    guest agent in its guest and no display."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(host)
    ids = {}
    with ctx.db.session() as s:
        node = seed_node(s, str(tmp_path / "storage"), str(tmp_path))
        node.url = "https://10.209.7.2:8444"
        image, net = s.query(Image).one(), s.query(Network).one()
        for i, name in enumerate(("idle", "web", "bare")):
            vm = Vm(name=name, image_id=image.id, host_id=node.id, cpus=1, memory_mib=256,
                    disk_bytes=64 << 20, state="stopped", desired_power="stopped")
            s.add(vm)
            s.flush()
            s.add(Nic(vm_id=vm.id, network_id=net.id, mac=f"52:54:00:00:00:0{i}", idx=0))
            ids[name] = vm.id
            host.state[name], host.agent[name] = "stopped", False
    for name, agent, port in (("web", True, 5900), ("bare", False, None)):
        vm_define.set_fields(ctx, ids[name], state="running")
        host.state[name], host.agent[name], host.vnc_port[name] = "running", agent, port
    try:
        yield ctx
    finally:
        ctx.ops.shutdown()


@pytest.fixture()
def client(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)


def test_vm_show_says_whether_the_guest_agent_answers(client: TestClient, host: Host) -> None:
    assert client.get("/api/v1/vms/web").json()["guest_agent"] is True
    assert client.get("/api/v1/vms/bare").json()["guest_agent"] is False
    assert client.get("/api/v1/vms/idle").json()["guest_agent"] is None  # not running
    assert host.asked("/idle/guest-agent") == []


def test_the_vm_list_does_not_ask_the_hosts(client: TestClient, host: Host) -> None:
    listed = client.get("/api/v1/vms").json()
    assert [v["guest_agent"] for v in listed] == [None, None, None]
    assert host.asked("/guest-agent") == []


def test_vm_show_answers_when_the_host_cannot_be_asked(ctx: EngineContext,
                                                       client: TestClient) -> None:
    ctx.agent_transport = httpx.MockTransport(lambda req: httpx.Response(
        502, json={"error": {"code": "host_error", "message": "libvirt is gone"}}))
    shown = client.get("/api/v1/vms/web")
    assert shown.status_code == 200 and shown.json()["guest_agent"] is None


def test_vm_show_does_not_wait_on_a_host_that_is_not_up(ctx: EngineContext,
                                                         client: TestClient,
                                                         host: Host) -> None:
    """A cut-off host (unresponsive) would only time out: it is not asked at all."""
    from corral.engine.db.models import Host as HostRow

    with ctx.db.session() as s:
        s.query(HostRow).update({"status": "unresponsive"})
    shown = client.get("/api/v1/vms/web")
    assert shown.status_code == 200 and shown.json()["guest_agent"] is None
    assert host.asked("/web/guest-agent") == []


def test_exec_hands_back_exit_code_and_output(client: TestClient, host: Host) -> None:
    resp = client.post("/api/v1/vms/web/exec", json={"command": ["sh", "-c", "exit 3"],
                                                      "timeout": 5})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"exit_code": 3, "signal": None, "stdout": "sh -c exit 3\n",
                           "stderr": "oops\n", "truncated": False, "timed_out": False}
    (sent,) = [b for _m, p, b in host.calls if p.endswith("/exec")]
    assert sent == {"command": ["sh", "-c", "exit 3"], "stdin": None, "timeout": 5.0}


def test_exec_without_a_guest_agent_is_a_clear_409(client: TestClient) -> None:
    resp = client.post("/api/v1/vms/bare/exec", json={"command": ["true"]})
    assert resp.status_code == 409
    assert "qemu-guest-agent is not running in the guest" in resp.json()["error"]["message"]


def test_exec_in_a_stopped_vm_is_a_409_that_asks_no_host(client: TestClient,
                                                         host: Host) -> None:
    resp = client.post("/api/v1/vms/idle/exec", json={"command": ["true"]})
    assert resp.status_code == 409
    assert resp.json()["error"]["message"].startswith("VM idle is stopped")
    assert host.asked("/exec") == []


@pytest.mark.parametrize(("body", "field"), [
    ({"command": []}, "command"),
    ({"command": ["true"], "timeout": 0}, "timeout"),
    ({"command": ["true"], "timeout": 301}, "timeout"),
    ({"command": ["echo", "a\x00b"]}, "command"),
    ({"command": ["true"], "shell": True}, "shell"),
])
def test_bad_exec_requests_are_a_422(client: TestClient, body: dict[str, Any],
                                     field: str) -> None:
    resp = client.post("/api/v1/vms/web/exec", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"].startswith(field)


def test_exec_in_no_such_vm_is_a_404(client: TestClient) -> None:
    assert client.post("/api/v1/vms/ghost/exec", json={"command": ["true"]}).status_code == 404


def test_vnc_names_the_host_and_the_port_of_the_display(client: TestClient) -> None:
    resp = client.get("/api/v1/vms/web/vnc")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"vm": "web", "host": "h1", "host_address": "10.209.7.2",
                           "listen": "127.0.0.1", "port": 5900}
    assert client.get("/api/v1/vms/idle/vnc").status_code == 409
    no_display = client.get("/api/v1/vms/bare/vnc")
    assert no_display.status_code == 409 and "--graphics vnc" in no_display.text


def test_vm_vnc_prints_an_ssh_tunnel_to_the_vms_host() -> None:
    shown = VmVnc(vm="web", host="h1", host_address="10.209.7.2", listen="127.0.0.1",
                  port=5901)
    text = "\n".join(tunnel_lines(shown, "https://engine.example:8443", local_port=5999))
    assert "ssh -N -L 5999:127.0.0.1:5901 root@10.209.7.2" in text
    assert "vncviewer localhost::5999" in text
    local = VmVnc(vm="web", host="h1", host_address="127.0.0.1", listen="127.0.0.1", port=5900)
    # an agent on the engine's own machine: the tunnel goes to the machine the CLI reached
    assert "root@engine.example" in "\n".join(tunnel_lines(local, "https://engine.example:1"))
    here = "\n".join(tunnel_lines(local, "https://127.0.0.1:8443"))
    assert "vncviewer 127.0.0.1::5900" in here


def _designed(ctx: EngineContext, name: str) -> Domain:
    with ctx.db.session() as s:
        vm_id = s.query(Vm).filter_by(name=name).one().id
    return Domain.from_xml(vm_design.domain_xml(ctx, vm_id)[2])


def test_watchdog_and_video_at_create_are_shown_and_designed(ctx: EngineContext,
                                                             client: TestClient) -> None:
    resp = client.post("/api/v1/vms", json={"name": "kiosk", "image": "tiny", "hardware": {
        "watchdog": "poweroff", "video": "virtio"}})
    assert resp.status_code == 202, resp.text
    shown = client.get("/api/v1/vms/kiosk").json()["hardware"]
    assert (shown["watchdog"], shown["video"]) == ("poweroff", "virtio")
    dom = _designed(ctx, "kiosk")
    assert [(w.model, w.action) for w in dom.devices.watchdogs] == [("i6300esb", "poweroff")]
    assert [v.model_type for v in dom.devices.videos] == ["virtio"]


def test_by_default_no_watchdog_and_vga(ctx: EngineContext, client: TestClient) -> None:
    shown = client.get("/api/v1/vms/idle").json()["hardware"]
    assert (shown["watchdog"], shown["video"]) == ("none", "vga")
    dom = _designed(ctx, "idle")
    assert dom.devices.watchdogs == [] and [v.model_type for v in dom.devices.videos] == ["vga"]


@pytest.mark.parametrize(("hardware", "field"), [
    ({"watchdog": "explode"}, "hardware.watchdog"),
    ({"watchdog": True}, "hardware.watchdog"),
    ({"video": "cirrus9000"}, "hardware.video"),
    ({"video": ""}, "hardware.video"),
])
def test_unknown_watchdog_actions_and_video_models_are_a_422(
        ctx: EngineContext, client: TestClient, hardware: dict[str, Any], field: str) -> None:
    resp = client.post("/api/v1/vms", json={"name": "bad", "image": "tiny",
                                            "hardware": hardware})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == field, resp.text
    patched = client.patch("/api/v1/vms/idle", json={"hardware": hardware})
    assert patched.status_code == 422 and patched.json()["error"]["field"] == field
    with ctx.db.session() as s:
        assert s.query(Vm).count() == 3


def _set(client: TestClient, name: str, **body: Any) -> dict[str, Any]:
    resp = client.patch(f"/api/v1/vms/{name}", json=body)
    assert resp.status_code == 202, resp.text
    return client.get(f"/api/v1/operations/{resp.json()['id']}/wait",
                      params={"timeout": 30}).json()


def test_watchdog_and_video_of_a_running_vm_wait_for_its_next_start(
        client: TestClient, host: Host) -> None:
    done = _set(client, "web", hardware={"watchdog": "reset", "video": "bochs"})
    assert done["status"] == "success", done
    shown = client.get("/api/v1/vms/web").json()
    assert shown["pending"] == ["hardware.watchdog", "hardware.video"]
    dom = Domain.from_xml(host.defined["web"])  # the definition has them for the next start
    assert [w.action for w in dom.devices.watchdogs] == ["reset"]
    assert [v.model_type for v in dom.devices.videos] == ["bochs"]
    done = _set(client, "web", hardware={"watchdog": "none", "video": "vga"})
    assert done["status"] == "success", done
    assert client.get("/api/v1/vms/web").json()["pending"] == []
    assert Domain.from_xml(host.defined["web"]).devices.watchdogs == []
