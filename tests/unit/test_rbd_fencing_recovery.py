"""Storage fencing in an HA recovery (services/rbd_fencing.py, called by
services/vm_recovery.py) with stand-in agents: the Ceph clients of every RBD disk of the VM
(its root disk, its rbd volumes; not a volume of a shared pool) are blocklisted through the
target host before anything of the VM is defined there, and the operation says which; a
fence that fails leaves nothing on the target, the VM on its old host, and an error naming
the disk and the reason."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, StoragePool, Vm, Volume
from corral.engine.services import vm_recovery

ADDRESS = {"127.0.0.1": "h1", "127.0.0.2": "h2"}
OLD_CLIENT = "10.0.0.1:0/4242"  # the QEMU of h1, cut off but maybe alive


@dataclass
class Agents:
    """Stand-in agents; h1 is off (fenced). ``calls``: (host, "METHOD /path") in order."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    domains: dict[tuple[str, str], str] = field(default_factory=dict)
    failing_fence: str | None = None  # a path part whose fence answers an error
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, host: str) -> list[str]:
        return [c for h, c in self.calls if h == host]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = ADDRESS[request.url.host]
        if host == "h1":
            raise httpx.ConnectError("no route to host", request=request)
        path, method = request.url.path, request.method
        parts = path.split("/")
        with self.lock:
            self.calls.append((host, f"{method} {path}"))
            if path.endswith("/fence"):
                if self.failing_fence and self.failing_fence in parts:
                    return httpx.Response(502, json={"error": {
                        "code": "host_error",
                        "message": "ceph: monclient(hunting): authenticate timed out"}})
                image = f"rbd/vm.{parts[5]}" if parts[4] == "roots" else f"rbd/{parts[5]}"
                return httpx.Response(200, json={"image": image, "addresses": [OLD_CLIENT],
                                                 "expire_s": 604800})
            if path == "/v1/images/tiny/files":
                return httpx.Response(200, json={"files": [{"kind": "qcow2",
                                                            "size": 1 << 20}]})
            if parts[2:3] == ["domains"] and len(parts) == 4:
                key = (host, parts[3])
                if method == "PUT":
                    self.domains[key] = "stopped"
                elif method == "DELETE":
                    return httpx.Response(200, json={
                        "deleted": self.domains.pop(key, None) is not None})
                if key not in self.domains:
                    return httpx.Response(404, json={"error": {"code": "not_found",
                                                               "message": "no domain"}})
                return httpx.Response(200, json={"name": parts[3], "uuid": "u",
                                                 "state": self.domains[key]})
            if parts[2:3] == ["domains"] and parts[-1] == "start":
                self.domains[(host, parts[3])] = "running"
                return httpx.Response(200, json={"name": parts[3], "uuid": "u",
                                                 "state": "running"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


@dataclass
class World:
    ctx: EngineContext
    agents: Agents

    def events(self, type_: str) -> list[dict[str, Any]]:
        """What the engine published of that type (its recent events)."""
        return [e.data for e in self.ctx.bus.recent if e.type == type_]

    def recover(self) -> Any:
        op = vm_recovery.submit(self.ctx, "web", "h2", "h1", "fenced (fence_test: off)")
        return self.ctx.ops.wait(op.id, timeout=30)

    def host_of(self, vm: str) -> str:
        with self.ctx.db.session() as s:
            row = s.query(Vm).filter_by(name=vm).one()
            host = s.get(Host, row.host_id)
            assert host is not None
            return host.name


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """h1 fenced, h2 up; VM web on h1: root disk in rbd pool ``ceph``, rbd volume
    ``ceph/data`` and a volume ``shared/logs`` attached."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    agents = Agents()
    ctx.agent_transport = httpx.MockTransport(agents)
    facts = {"cpus": 4, "memory_mib": 2048, "virt_type": "qemu",
             "storage_dir": str(tmp_path), "console_dir": str(tmp_path)}
    with ctx.db.session() as s:
        h1 = Host(name="h1", url="https://127.0.0.1:8444", status="down", facts=facts)
        h2 = Host(name="h2", url="https://127.0.0.2:8444", status="up", facts=facts)
        image = Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=1 << 20)
        ceph = StoragePool(name="ceph", type="rbd", ceph_conf="/etc/ceph/ceph.conf",
                           ceph_pool="rbd", monitors=[["10.0.0.9", 6789]], status="ready")
        shared = StoragePool(name="shared", type="shared", path=str(tmp_path / "pool"),
                             status="ready")
        s.add_all([h1, h2, image, ceph, shared])
        s.flush()
        vm = Vm(name="web", image_id=image.id, host_id=h1.id, cpus=1, memory_mib=512,
                disk_bytes=64 << 20, state="stopped", desired_power="running",
                root_pool_id=ceph.id, ha=True)
        s.add(vm)
        s.flush()
        s.add_all([Volume(pool_id=ceph.id, name="data", format="raw", size=1 << 30,
                          status="ready", vm_id=vm.id, bus="virtio", target="vdb"),
                   Volume(pool_id=shared.id, name="logs", format="qcow2", size=1 << 30,
                          status="ready", vm_id=vm.id, bus="virtio", target="vdc")])
    try:
        yield World(ctx, agents)
    finally:
        ctx.ops.shutdown()


def test_every_rbd_disk_is_fenced_through_the_target_before_the_define(world: World) -> None:
    op = world.recover()
    assert op.status == "success", op.error
    calls = world.agents.on("h2")
    fences = [c for c in calls if c.endswith("/fence")]
    assert fences == ["POST /v1/pools/ceph/roots/web/fence",
                      "POST /v1/pools/ceph/volumes/data/fence"]  # shared/logs: no fencing
    define = calls.index("PUT /v1/domains/web")
    assert all(calls.index(f) < define for f in fences)
    assert world.agents.domains == {("h2", "web"): "running"}
    assert world.host_of("web") == "h2"
    said = [e for e in world.events("ha") if e.get("event") == "storage-fenced"]
    assert len(said) == 1 and said[0]["vm"] == "web" and said[0]["addresses"] == [OLD_CLIENT]
    assert OLD_CLIENT in said[0]["message"] and "2 RBD disk(s)" in said[0]["message"]
    progress = [e["message"] for e in world.events("operation")
                if e.get("id") == op.id and e.get("message")]
    assert any(OLD_CLIENT in m for m in progress)  # the operation said it while it ran


def test_a_failed_fence_leaves_nothing_on_the_target_and_says_why(world: World) -> None:
    world.agents.failing_fence = "data"
    op = world.recover()
    assert op.status == "failure"
    message = op.error["message"]
    assert "volume ceph/data" in message and "authenticate timed out" in message
    assert "not started there" in message
    calls = world.agents.on("h2")
    assert not any(c.startswith("PUT /v1/domains/") or c.endswith("/start") for c in calls)
    assert world.agents.domains == {}
    assert world.host_of("web") == "h1"  # the HA loop tries again next round
    # once Ceph answers, a later recovery goes through
    world.agents.failing_fence = None
    assert world.recover().status == "success"
    assert world.host_of("web") == "h2" and world.agents.domains == {("h2", "web"): "running"}
