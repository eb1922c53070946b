"""Growing a VM's root disk (`corral vm disk resize NAME root --size`, `POST
/api/v1/vms/{name}/disks/root/resize`): live through QEMU on a running VM, on the host for a
stopped one, never smaller, and a failure leaves the VM's recorded size as it was.

The engine runs for real (SQLite, routes, services, operations) over a stand-in agent that
answers the domain's state and the two ways a disk grows, and notes every call."""

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

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Vm

MIB = 1 << 20


class Host:
    def __init__(self) -> None:
        self.states = {"idle": "stopped", "web": "running"}
        self.calls: list[tuple[str, Any]] = []
        self.fail = False

    def __call__(self, req: httpx.Request) -> httpx.Response:
        path, body = req.url.path, json.loads(req.content) if req.content else None
        if m := re.fullmatch(r"/v1/domains/([^/]+)", path):
            return httpx.Response(200, json={"name": m.group(1), "uuid": "u",
                                             "state": self.states[m.group(1)]})
        self.calls.append((path, body))
        if self.fail:
            return httpx.Response(500, json={"error": {"code": "host_error",
                                                       "message": "qemu-img said no"}})
        if path.endswith("/disks/resize"):
            return httpx.Response(200, json={"target": body["target"], "capacity": body["size"]})
        if path.endswith("/grow"):
            return httpx.Response(200, json={"capacity": body["size"]})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


@pytest.fixture()
def host() -> Host:
    return Host()


@pytest.fixture()
def ctx(tmp_path: Path, host: Host) -> Iterator[EngineContext]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(host)
    with ctx.db.session() as s:
        node = seed_node(s, str(tmp_path / "storage"), str(tmp_path))
        image, net = s.query(Image).one(), s.query(Network).one()
        for i, (name, state) in enumerate((("idle", "stopped"), ("web", "running"))):
            vm = Vm(name=name, image_id=image.id, host_id=node.id, cpus=1, memory_mib=256,
                    disk_bytes=64 * MIB, state=state, desired_power=state)
            s.add(vm)
            s.flush()
            s.add(Nic(vm_id=vm.id, network_id=net.id, mac=f"52:54:00:00:00:0{i}", idx=0))
    try:
        yield ctx
    finally:
        ctx.ops.shutdown()


@pytest.fixture()
def client(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)


def _grow(client: TestClient, name: str, size: Any) -> httpx.Response:
    return client.post(f"/api/v1/vms/{name}/disks/root/resize", json={"size": size})


def _done(client: TestClient, resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    op: dict[str, Any] = client.get(f"/api/v1/operations/{resp.json()['id']}/wait",
                                    params={"timeout": 30}).json()
    return op


def _size(client: TestClient, name: str) -> int:
    return int(client.get(f"/api/v1/vms/{name}").json()["disk_bytes"])


def test_a_stopped_vms_root_disk_grows_on_its_host(client: TestClient, host: Host) -> None:
    assert _done(client, _grow(client, "idle", "96M"))["status"] == "success"
    assert host.calls == [("/v1/pools/default/roots/idle/grow", {"size": 96 * MIB})]
    assert _size(client, "idle") == 96 * MIB


def test_a_running_vms_root_disk_grows_live_where_the_guest_sees_it(
        client: TestClient, host: Host) -> None:
    assert _done(client, _grow(client, "web", "1G"))["status"] == "success"
    assert host.calls == [("/v1/domains/web/disks/resize", {"target": "vda", "size": 1 << 30})]
    assert _size(client, "web") == 1 << 30


@pytest.mark.parametrize("size, words", [("32M", "only grow"), ("64M", "already"),
                                         ("-1G", "size"), ("lots", "size")])
def test_a_disk_never_shrinks_and_bad_sizes_are_422s(client: TestClient, host: Host,
                                                     size: str, words: str) -> None:
    resp = _grow(client, "idle", size)
    assert resp.status_code == 422 and words in resp.json()["error"]["message"], resp.text
    assert resp.json()["error"]["field"] == "size"
    assert host.calls == [] and _size(client, "idle") == 64 * MIB


def test_unknown_vm_is_a_404(client: TestClient) -> None:
    assert _grow(client, "nope", "1G").status_code == 404


def test_a_vm_in_transition_is_a_409(ctx: EngineContext, client: TestClient) -> None:
    with ctx.db.session() as s:
        s.query(Vm).filter_by(name="idle").one().state = "creating"
    resp = _grow(client, "idle", "1G")
    assert resp.status_code == 409 and "creating" in resp.json()["error"]["message"]


def test_a_failed_grow_keeps_the_size_it_had(client: TestClient, host: Host) -> None:
    host.fail = True
    op = _done(client, _grow(client, "idle", "1G"))
    assert op["status"] == "failure" and "qemu-img said no" in op["error"]["message"], op
    assert _size(client, "idle") == 64 * MIB
