"""Changing a VM (`PATCH /api/v1/vms/{name}`, `corral vm set`): what applies live reaches the
running domain, what applies at the next start is defined and listed as pending, what needs
a stopped VM is a 409 that changes nothing, and a failed change leaves the VM as it was.

The engine runs for real (SQLite, routes, services, operations) over a stand-in agent
(:class:`Host`) that keeps each domain's state, vCPUs and balloon as libvirt would and notes
every call.
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

from corral.domainxml import Domain, MemoryDevice
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Operation, Vm
from corral.engine.services import vm_define, vm_design


class Host:
    """An agent with running or stopped domains: vCPUs plug in up to their maximum, the
    balloon moves up to the booted memory. ``fail``: ``METHOD /path`` answered with a 500."""

    def __init__(self) -> None:
        self.domains: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.defined: dict[str, str] = {}
        self.fail: set[str] = set()

    def __call__(self, req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content) if req.content else None
        path = req.url.path
        self.calls.append((req.method, path, body))
        if f"{req.method} {path}" in self.fail:
            return httpx.Response(500, json={"error": {"code": "host_error",
                                                       "message": "libvirt said no"}})
        m = re.fullmatch(r"/v1/domains/([^/]+)(/[a-z-]+)?", path)
        if m is None:  # seeds and the rest: done
            return httpx.Response(200, json={"path": "/x", "size": 1, "deleted": True})
        name, sub = m.group(1), m.group(2)
        dom = self.domains[name]
        if sub is None and req.method == "PUT":
            self.defined[name] = body["xml"]
        elif sub == "/vcpus":
            assert dom["state"] == "running" and body["count"] <= dom["vcpus_max"]
            dom["vcpus"] = body["count"]
        elif sub == "/memory-target":
            assert dom["state"] == "running" and body["mib"] <= dom["memory_mib"]
            dom["balloon_mib"] = body["mib"]
        elif sub == "/memory":  # a DIMM: the balloon keeps what it held
            size = int(MemoryDevice.from_xml(body["xml"]).target_size or 0) >> 10
            assert dom["state"] == "running" and dom["memory_slots_free"] > 0
            assert dom["memory_mib"] + size == body["total_mib"] <= dom["memory_max_mib"]
            dom["memory_mib"] += size
            dom["balloon_mib"] += size
            dom["memory_slots_free"] -= 1
        if sub in ("/resources", "/vcpus", "/memory-target", "/memory"):
            return httpx.Response(200, json={k: dom[k] for k in (
                "vcpus", "vcpus_max", "memory_mib", "balloon_mib", "memory_max_mib",
                "memory_slots_free") if k in dom})
        return httpx.Response(200, json={"name": name, "uuid": dom["uuid"],
                                         "state": dom["state"]})

    def live_calls(self) -> list[tuple[str, Any]]:
        return [(p.rsplit("/", 1)[1], b) for m, p, b in self.calls
                if p.endswith(("/vcpus", "/memory-target", "/memory"))]


@pytest.fixture()
def host() -> Host:
    return Host()


@pytest.fixture()
def ctx(tmp_path: Path, host: Host) -> Iterator[EngineContext]:
    """``idle``: stopped; ``web``: running since it was started with 1 vCPU (of at most 4)
    and 512 MiB."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(host)
    with ctx.db.session() as s:
        node = seed_node(s, str(tmp_path / "storage"), str(tmp_path))
        image, net = s.query(Image).one(), s.query(Network).one()
        for i, name in enumerate(("idle", "web")):
            vm = Vm(name=name, image_id=image.id, host_id=node.id, cpus=1, memory_mib=512,
                    disk_bytes=64 << 20, state="stopped", desired_power="stopped",
                    hardware={"cpu_max": 4})
            s.add(vm)
            s.flush()
            s.add(Nic(vm_id=vm.id, network_id=net.id, mac=f"52:54:00:00:00:0{i}", idx=0))
            host.domains[name] = {"uuid": vm.id, "state": "stopped", "vcpus": 1,
                                  "vcpus_max": 4, "memory_mib": 512, "balloon_mib": 512}
            web_id = vm.id
    vm_define.set_fields(ctx, web_id, state="running")  # as a start records what it booted
    host.domains["web"]["state"] = "running"
    try:
        yield ctx
    finally:
        ctx.ops.shutdown()


@pytest.fixture()
def client(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)


def _set(client: TestClient, name: str, **body: Any) -> dict[str, Any]:
    """PATCH, then the operation once it ended."""
    resp = client.patch(f"/api/v1/vms/{name}", json=body)
    assert resp.status_code == 202, resp.text
    return client.get(f"/api/v1/operations/{resp.json()['id']}/wait",
                      params={"timeout": 30}).json()


def _counts(ctx: EngineContext) -> int:
    with ctx.db.session() as s:
        return s.query(Operation).count()


def test_a_stopped_vm_takes_everything_into_its_definition(client: TestClient,
                                                           host: Host) -> None:
    op = _set(client, "idle", cpus=2, memory="1G", memory_target="768M",
              description="build box", hardware={"cpu_model": "Haswell", "firmware": "uefi",
                                                 "tpm": True, "machine": "q35"})
    assert op["status"] == "success", op
    shown = client.get("/api/v1/vms/idle").json()
    assert (shown["cpus"], shown["memory_mib"], shown["memory_target_mib"]) == (2, 1024, 768)
    assert shown["description"] == "build box" and shown["pending"] == []
    assert (shown["hardware"]["firmware"], shown["hardware"]["tpm"]) == ("uefi", True)
    dom = Domain.from_xml(host.defined["idle"])
    assert (dom.vcpu, dom.vcpu_current) == (4, 2)
    assert (dom.memory_kib, dom.current_memory_kib) == (1 << 20, 768 << 10)
    assert (dom.cpu.mode, dom.cpu.model, dom.os.firmware) == ("custom", "Haswell", "efi")
    assert host.live_calls() == []  # nothing runs: nothing is plugged


def test_vcpus_plug_in_live_up_to_the_booted_maximum(client: TestClient, host: Host) -> None:
    op = _set(client, "web", cpus=3)
    assert op["status"] == "success", op
    assert host.live_calls() == [("vcpus", {"count": 3})]
    assert host.domains["web"]["vcpus"] == 3
    shown = client.get("/api/v1/vms/web").json()
    assert (shown["cpus"], shown["pending"]) == (3, [])
    assert "3 vCPUs now" in op["message"]
    dom = Domain.from_xml(host.defined["web"])  # and it keeps them when it next starts
    assert (dom.vcpu, dom.vcpu_current) == (4, 3)


def test_beyond_the_booted_maximum_vcpus_wait_for_the_next_start(
        ctx: EngineContext, client: TestClient, host: Host) -> None:
    refused = client.patch("/api/v1/vms/web", json={"cpus": 6})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "hardware.cpu_max"
    op = _set(client, "web", cpus=6, hardware={"cpu_max": 8})
    assert op["status"] == "success", op
    assert host.live_calls() == []
    shown = client.get("/api/v1/vms/web").json()
    assert shown["pending"] == ["cpus", "hardware.cpu_max"]
    assert "at next start: cpus, hardware.cpu_max" in op["message"]
    dom = Domain.from_xml(host.defined["web"])
    assert (dom.vcpu, dom.vcpu_current) == (8, 6)
    # a start runs the definition: nothing is pending once it has
    with ctx.db.session() as s:
        web_id = s.query(Vm).filter_by(name="web").one().id
    vm_define.set_fields(ctx, web_id, state="stopped")
    vm_define.set_fields(ctx, web_id, state="running")
    assert client.get("/api/v1/vms/web").json()["pending"] == []


def test_fewer_vcpus_on_a_running_vm_are_for_its_next_start(client: TestClient,
                                                             host: Host) -> None:
    assert _set(client, "web", cpus=3)["status"] == "success"
    op = _set(client, "web", cpus=2)
    assert op["status"] == "success", op
    assert host.live_calls() == [("vcpus", {"count": 3})]  # no unplug asked of the guest
    assert client.get("/api/v1/vms/web").json()["pending"] == ["cpus"]


def test_the_balloon_moves_live_and_memory_waits_for_the_next_start(
        client: TestClient, host: Host) -> None:
    op = _set(client, "web", memory_target="256M")
    assert op["status"] == "success", op
    assert host.live_calls() == [("memory-target", {"mib": 256})]
    shown = client.get("/api/v1/vms/web").json()
    assert (shown["memory_target_mib"], shown["pending"]) == (256, [])

    op = _set(client, "web", memory="1G")
    assert op["status"] == "success", op
    shown = client.get("/api/v1/vms/web").json()
    assert (shown["memory_mib"], shown["pending"]) == (1024, ["memory"])
    assert len(host.live_calls()) == 1  # the guest keeps its 256 MiB until then

    op = _set(client, "web", memory="512M", memory_target=None)  # all of it, at once
    assert op["status"] == "success", op
    assert host.live_calls()[-1] == ("memory-target", {"mib": 512})
    shown = client.get("/api/v1/vms/web").json()
    assert (shown["memory_target_mib"], shown["pending"]) == (None, [])


def test_a_smaller_memory_for_the_next_start_does_not_balloon_the_guest_now(
        client: TestClient, host: Host) -> None:
    op = _set(client, "web", memory="256M")
    assert op["status"] == "success", op
    assert host.live_calls() == []
    assert client.get("/api/v1/vms/web").json()["pending"] == ["memory"]


@pytest.mark.parametrize("body", [
    {"hardware": {"firmware": "uefi"}}, {"hardware": {"tpm": True}},
    {"hardware": {"machine": "i440fx"}}, {"cloud_init": {"hostname": "x"}},
    {"cpus": 2, "hardware": {"secure_boot": True, "firmware": "uefi"}},
])
def test_what_needs_a_stopped_vm_is_a_409_and_changes_nothing(
        ctx: EngineContext, client: TestClient, host: Host, body: dict[str, Any]) -> None:
    before = _counts(ctx), client.get("/api/v1/vms/web").json()
    resp = client.patch("/api/v1/vms/web", json=body)
    assert resp.status_code == 409, resp.text
    assert "only change while it is stopped" in resp.json()["error"]["message"]
    assert (_counts(ctx), client.get("/api/v1/vms/web").json()) == before
    assert [c for c in host.calls if not c[1].endswith("/guest-agent")] == []  # `vm show` asks


@pytest.mark.parametrize(("body", "field"), [
    ({}, "body"),
    ({"memory_target": "1G"}, "memory_target"),  # more than its 512 MiB
    ({"memory_target": "8M"}, "memory_target"),
    ({"memory": "2P"}, "memory"),
    ({"cpus": 0}, "cpus"),
    ({"description": "a\x00b"}, "description"),
    ({"description": "x" * 1025}, "description"),
    ({"hardware": {"sockets": 3}}, "hardware.sockets"),  # 4 vCPUs at most: not in 3 sockets
    ({"hardware": {"cpu_max": 0}}, "hardware.cpu_max"),
    ({"hardware": {"firmware": None}}, "hardware.firmware"),
    ({"hardware": {"secure_boot": True}}, "hardware"),  # BIOS has none
    ({"hardware": {"sound": "ac97"}}, "hardware.sound"),  # no such setting
])
def test_bad_changes_are_a_422_naming_the_field(ctx: EngineContext, client: TestClient,
                                                body: dict[str, Any], field: str) -> None:
    before = _counts(ctx)
    resp = client.patch("/api/v1/vms/idle", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field, resp.json()
    assert _counts(ctx) == before


def test_a_failed_live_change_puts_everything_back(client: TestClient, host: Host) -> None:
    host.fail.add("PUT /v1/domains/web/vcpus")
    before = client.get("/api/v1/vms/web").json()
    op = _set(client, "web", cpus=2, memory_target="300M", description="new")
    assert op["status"] == "failure" and "libvirt said no" in op["error"]["message"]
    assert client.get("/api/v1/vms/web").json() == before
    assert host.domains["web"]["balloon_mib"] == 512  # the balloon went back as well
    assert Domain.from_xml(host.defined["web"]).vcpu_current == 1  # the old definition


def test_the_description_changes_live_and_is_kept_from_create(client: TestClient,
                                                              host: Host) -> None:
    op = _set(client, "web", description="front end")
    assert op["status"] == "success", op
    shown = client.get("/api/v1/vms/web").json()
    assert (shown["description"], shown["pending"]) == ("front end", [])
    resp = client.post("/api/v1/vms", json={"name": "new", "image": "tiny",
                                            "description": "made with one"})
    assert resp.status_code == 202, resp.text
    assert client.get("/api/v1/vms/new").json()["description"] == "made with one"


def test_a_vm_designed_with_hot_plug_room_and_a_balloon_target(ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name="idle").one()
        vm.hardware, vm.cpus, vm.memory_target_mib = {"cpu_max": 4, "sockets": 2}, 2, 256
        vm_id = vm.id
    dom = Domain.from_xml(vm_design.domain_xml(ctx, vm_id)[2])
    assert (dom.vcpu, dom.vcpu_current) == (4, 2)
    # the topology spans the most vCPUs it can run
    assert (dom.cpu.topology_sockets, dom.cpu.topology_cores, dom.cpu.topology_threads) == (
        2, 2, 1)
    assert (dom.memory_kib, dom.current_memory_kib) == (512 << 10, 256 << 10)


# -- memory hot-plug -----------------------------------------------------------------


@pytest.fixture()
def grows(ctx: EngineContext, host: Host) -> None:
    """``web`` started again with room for memory hot-plug: up to 2 GiB, 16 DIMM slots."""
    with ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name="web").one()
        vm.hardware = {"cpu_max": 4, "memory_max": 2048}
        web_id = vm.id
    vm_define.set_fields(ctx, web_id, state="stopped")
    vm_define.set_fields(ctx, web_id, state="running")
    host.domains["web"].update(memory_max_mib=2048, memory_slots_free=16)


@pytest.mark.usefixtures("grows")
def test_memory_grows_live_by_one_dimm_and_the_next_start_has_it(client: TestClient,
                                                                 host: Host) -> None:
    op = _set(client, "web", memory="768M")
    assert op["status"] == "success", op
    [(call, body)] = host.live_calls()
    dimm = MemoryDevice.from_xml(body["xml"])
    assert (call, body["total_mib"]) == ("memory", 768)
    assert (dimm.model, dimm.target_size, dimm.target_node) == ("dimm", 256 << 10, 0)
    assert "768 MiB of memory now" in op["message"]
    shown = client.get("/api/v1/vms/web").json()
    assert (shown["memory_mib"], shown["pending"]) == (768, [])
    # the definition: all of it as boot memory, one NUMA cell, no DIMM to plug again
    dom = Domain.from_xml(host.defined["web"])
    assert (dom.memory_kib, dom.max_memory_kib, dom.max_memory_slots) == (
        768 << 10, 2048 << 10, 16)
    assert [c.memory for c in dom.cpu.numa.cells] == [768 << 10]
    assert dom.devices.memories == []


@pytest.mark.usefixtures("grows")
def test_a_balloon_target_stays_where_it_was_asked_when_memory_grows(
        client: TestClient, host: Host) -> None:
    assert _set(client, "web", memory_target="384M")["status"] == "success"
    op = _set(client, "web", memory="640M")
    assert op["status"] == "success", op
    # libvirt's balloon keeps what it held, so the guest would get 512 MiB: put it back
    assert [c for c, _b in host.live_calls()] == ["memory-target", "memory", "memory-target"]
    assert (host.domains["web"]["memory_mib"], host.domains["web"]["balloon_mib"]) == (640, 384)
    shown = client.get("/api/v1/vms/web").json()
    assert (shown["memory_mib"], shown["memory_target_mib"], shown["pending"]) == (
        640, 384, [])


@pytest.mark.usefixtures("grows")
@pytest.mark.parametrize(("memory", "pending"), [
    ("256M", ["memory"]),  # a DIMM cannot be taken out of a running guest
    ("4G", ["memory", "hardware.memory_max"]),  # beyond the booted room
])
def test_less_memory_or_more_than_the_room_waits_for_the_next_start(
        client: TestClient, host: Host, memory: str, pending: list[str]) -> None:
    body: dict[str, Any] = {"memory": memory}
    if memory == "4G":
        body["hardware"] = {"memory_max": "4G"}
    op = _set(client, "web", **body)
    assert op["status"] == "success", op
    assert host.live_calls() == []
    assert client.get("/api/v1/vms/web").json()["pending"] == pending


@pytest.mark.usefixtures("grows")
def test_memory_with_no_slot_left_waits_for_the_next_start(client: TestClient,
                                                           host: Host) -> None:
    host.domains["web"]["memory_slots_free"] = 0
    assert _set(client, "web", memory="640M")["status"] == "success"
    assert host.live_calls() == []
    assert client.get("/api/v1/vms/web").json()["pending"] == ["memory"]


@pytest.mark.usefixtures("grows")
def test_memory_that_is_no_whole_memory_block_more_is_a_422(ctx: EngineContext,
                                                           client: TestClient) -> None:
    before = _counts(ctx)
    resp = client.patch("/api/v1/vms/web", json={"memory": "600M"})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == "memory" and "steps of 128 MiB" in error["message"]
    assert _counts(ctx) == before
    # a stopped VM takes any size
    assert _set(client, "idle", memory="600M", hardware={"memory_max": "1G"})["status"] == \
        "success"


@pytest.mark.parametrize(("body", "field"), [
    ({"memory": "1G", "hardware": {"memory_max": "768M"}}, "hardware.memory_max"),
    ({"hardware": {"memory_max": "256M"}}, "hardware.memory_max"),  # less than its 512M
    ({"hardware": {"memory_max": "lots"}}, "hardware.memory_max"),
])
def test_a_memory_max_below_the_memory_is_a_422(client: TestClient, body: dict[str, Any],
                                                field: str) -> None:
    resp = client.patch("/api/v1/vms/idle", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


@pytest.mark.usefixtures("grows")
def test_a_dimm_the_host_refuses_changes_nothing(client: TestClient, host: Host) -> None:
    host.fail.add("PUT /v1/domains/web/memory")
    before = client.get("/api/v1/vms/web").json()
    op = _set(client, "web", memory="768M")
    assert op["status"] == "failure" and "libvirt said no" in op["error"]["message"]
    assert client.get("/api/v1/vms/web").json() == before
    assert Domain.from_xml(host.defined["web"]).memory_kib == 512 << 10
