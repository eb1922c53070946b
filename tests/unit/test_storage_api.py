"""Storage pools and volumes through the engine's API, down to real files on disk.

The engine runs for real (SQLite, migrations, routes, services, operations); its one host's
agent is the agent's real storage API (corral.agent.pools.routes, served over HTTP on
127.0.0.1 by uvicorn in a thread) on a state dir in tmp_path, so volumes are real qcow2 and
raw files made by qemu-img. Refused requests are checked to leave no row, operation or file.
VMs, libvirt and Ceph are the integration tests' (tests/integration/test_storage*.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from qemu_reach import let_qemu_reach

from corral.agent.hypervisor import Hypervisor
from corral.agent.pools.routes import router as pools_router
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Operation, StoragePool, Vm, Volume
from corral.engine.services import pools, vm_design
from corral.engine.services.auth import create_token
from corral.httpserve import install_error_handlers

MIB = 1 << 20


@dataclass
class Node:
    api: TestClient
    ctx: EngineContext
    storage: Path  # the agent's storage dir: the default pool

    def wait(self, resp: Any) -> dict[str, Any]:
        assert resp.status_code == 202, resp.text
        op = self.ctx.ops.wait(resp.json()["id"], timeout=60)
        return op.model_dump(mode="json")

    def ok(self, resp: Any) -> None:
        op = self.wait(resp)
        assert op["status"] == "success", op

    def counts(self) -> tuple[int, int, int]:
        with self.ctx.db.session() as s:
            return (s.query(StoragePool).count(), s.query(Volume).count(),
                    s.query(Operation).count())


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[Node]:
    state = tmp_path / "agent"
    storage = state / "storage"
    for sub in ("images", "vms"):
        (storage / sub).mkdir(parents=True)
    let_qemu_reach(tmp_path)  # QEMU's user must reach volumes; pools check it
    agent = FastAPI()
    install_error_handlers(agent)
    agent.include_router(pools_router(state, storage, Hypervisor("test:///default")))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(agent, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    ctx = build_context(EngineSettings(data_dir=tmp_path / "engine", agent_reconnect_s=0))
    try:
        with ctx.db.session() as s:
            s.add(Host(name="h1", url=f"http://127.0.0.1:{port}", status="up",
                       facts={"storage_dir": str(storage), "console_dir": str(tmp_path)}))
        pools.ensure_default(ctx)
        api = TestClient(create_app(ctx),
                         headers={"Authorization": f"Bearer {create_token(ctx, 'admin')}"})
        yield Node(api, ctx, storage)
    finally:
        ctx.ops.shutdown()
        server.should_exit = True
        thread.join(10)
        sock.close()


def _qemu_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True,
                         text=True, check=True).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def test_default_pool_is_the_agents_storage_dir(node: Node) -> None:
    (default,) = node.api.get("/api/v1/storage/pools").json()
    assert (default["name"], default["type"], default["status"]) == ("default", "dir", "ready")
    assert default["path"] == str(node.storage)
    assert default["host"] == "h1"
    assert default["capacity"] > default["available"] > 0
    assert 0 < default["allocation"] < default["capacity"]
    refused = node.api.delete("/api/v1/storage/pools/default")
    assert refused.status_code == 409 and "default pool" in refused.json()["error"]["message"]


def test_dir_pool_and_thin_volumes_lifecycle(node: Node) -> None:
    node.ok(node.api.post("/api/v1/storage/pools", json={"name": "fast"}))
    pool = node.api.get("/api/v1/storage/pools/fast").json()
    root = Path(pool["path"])
    assert root == node.storage / "pools" / "fast" and root.is_dir()
    assert pool["capacity"] > 0 and pool["volumes"] == 0

    node.ok(node.api.post("/api/v1/storage/pools/fast/volumes",
                          json={"name": "data", "size": "64M"}))
    node.ok(node.api.post("/api/v1/storage/pools/fast/volumes",
                          json={"name": "scratch", "size": "1G", "format": "raw"}))
    data = node.api.get("/api/v1/storage/pools/fast/volumes/data").json()
    assert (data["format"], data["size"], data["status"]) == ("qcow2", 64 * MIB, "ready")
    assert data["source"] == str(root / "data.qcow2")
    assert _qemu_info(root / "data.qcow2")["virtual-size"] == 64 * MIB
    scratch = node.api.get("/api/v1/storage/pools/fast/volumes/scratch").json()
    assert scratch["size"] == 1 << 30
    assert scratch["allocation"] < MIB  # thin: a sparse file, nothing written
    assert (root / "scratch.raw").stat().st_size == 1 << 30
    assert (root / "scratch.raw").stat().st_mode & 0o777 == 0o600
    listed = node.api.get("/api/v1/storage/volumes").json()
    assert [(v["pool"], v["name"]) for v in listed] == [("fast", "data"), ("fast", "scratch")]
    assert node.api.get("/api/v1/storage/pools/fast").json()["volumes"] == 2

    node.ok(node.api.post("/api/v1/storage/pools/fast/volumes/data/resize", json={"size": "96M"}))
    assert _qemu_info(root / "data.qcow2")["virtual-size"] == 96 * MIB
    assert node.api.get("/api/v1/storage/pools/fast/volumes/data").json()["size"] == 96 * MIB
    shrink = node.api.post("/api/v1/storage/pools/fast/volumes/data/resize", json={"size": "32M"})
    assert shrink.status_code == 422 and shrink.json()["error"]["field"] == "size"
    assert "only grow" in shrink.json()["error"]["message"]

    in_use = node.api.delete("/api/v1/storage/pools/fast")
    assert in_use.status_code == 409
    assert "in use" in in_use.json()["error"]["message"]
    for name in ("data", "scratch"):
        node.ok(node.api.delete(f"/api/v1/storage/pools/fast/volumes/{name}"))
    assert sorted(p.name for p in root.iterdir()) == [".corral-created"]
    node.ok(node.api.delete("/api/v1/storage/pools/fast"))
    assert not root.exists()  # corral made it, it was empty: gone
    assert [p["name"] for p in node.api.get("/api/v1/storage/pools").json()] == ["default"]


def test_volume_in_use_is_never_deleted(node: Node) -> None:
    node.ok(node.api.post("/api/v1/storage/pools/default/volumes",
                          json={"name": "db", "size": "16M"}))
    with node.ctx.db.session() as s:
        image = Image(name="tiny", status="ready", virtual_size=MIB, file_size=MIB)
        s.add(image)
        s.flush()
        host = s.query(Host).one()
        vm = Vm(name="web", image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
                disk_bytes=MIB, state="stopped", desired_power="stopped")
        s.add(vm)
        s.flush()
        vol = s.query(Volume).filter_by(name="db").one()
        vol.vm_id, vol.bus, vol.target = vm.id, "virtio", "vdb"
    refused = node.api.delete("/api/v1/storage/pools/default/volumes/db")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"].startswith("volume default/db is in use")
    assert "web" in refused.json()["error"]["message"]
    assert (node.storage / "db.qcow2").exists()
    # The designer's hook: the attached volume, with the target it keeps.
    with node.ctx.db.session() as s:
        (spec,) = vm_design.attached_specs(s, s.query(Vm).one())
    assert (spec.path, spec.format, spec.bus, spec.target) == (
        str(node.storage / "db.qcow2"), "qcow2", "virtio", "vdb")
    # Deleting the VM keeps the volume and frees it (ON DELETE SET NULL).
    with node.ctx.db.session() as s:
        s.delete(s.query(Vm).one())
    vol_out = node.api.get("/api/v1/storage/pools/default/volumes/db").json()
    assert vol_out["vm"] is None and vol_out["target"] is None
    node.ok(node.api.delete("/api/v1/storage/pools/default/volumes/db"))
    assert not (node.storage / "db.qcow2").exists()


def test_pool_full_is_refused_before_writing(node: Node) -> None:
    before = node.counts()
    free = node.api.get("/api/v1/storage/pools/default").json()["available"]
    too_big = f"{(free >> 30) + 2}G"
    resp = node.api.post("/api/v1/storage/pools/default/volumes",
                         json={"name": "huge", "size": too_big})
    assert resp.status_code == 409, resp.text
    err = resp.json()["error"]
    assert (err["code"], err["field"]) == ("insufficient_resources", "size")
    assert "pool default is too full" in err["message"] and "MiB free" in err["message"]
    assert node.counts() == before
    assert not list(node.storage.glob("huge*")) and not list(node.storage.glob(".huge*"))
    node.ok(node.api.post("/api/v1/storage/pools/default/volumes",
                          json={"name": "small", "size": "1M"}))
    grow = node.api.post("/api/v1/storage/pools/default/volumes/small/resize",
                         json={"size": too_big})
    assert grow.status_code == 409 and grow.json()["error"]["code"] == "insufficient_resources"
    assert node.api.get("/api/v1/storage/pools/default/volumes/small").json()["size"] == MIB


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "../etc", "size": "1M"}, "name"),
        ({"name": "a/b", "size": "1M"}, "name"),
        ({"name": "", "size": "1M"}, "name"),
        ({"name": "x" * 64, "size": "1M"}, "name"),
        ({"name": "ok", "size": "0"}, "size"),
        ({"name": "ok", "size": "lots"}, "size"),
        ({"name": "ok", "size": "1M", "format": "vmdk"}, "format"),
        ({"name": "ok"}, "size"),
        ({"name": "ok", "size": "1M", "extra": 1}, "extra"),
    ],
)
def test_bad_volume_requests_are_422_and_make_nothing(node: Node, body: dict[str, Any],
                                                      field: str) -> None:
    before = node.counts()
    resp = node.api.post("/api/v1/storage/pools/default/volumes", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert node.counts() == before
    assert not list(node.storage.glob("*.qcow2")) and not list(node.storage.glob("*.raw"))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "../up"}, "name"),
        ({"name": "p", "type": "lvm"}, "type"),
        ({"name": "p", "path": "relative/dir"}, "path"),
        ({"name": "p", "path": "/srv/../etc"}, "path"),
        ({"name": "p", "path": "/srv/a\nb"}, "path"),
        ({"name": "p", "type": "shared"}, "body"),
        ({"name": "p", "type": "rbd"}, "body"),
        ({"name": "p", "type": "rbd", "ceph_pool": "rbd", "path": "/srv"}, "body"),
        ({"name": "p", "type": "rbd", "ceph_pool": "r b"}, "ceph_pool"),
        ({"name": "p", "type": "dir", "ceph_pool": "rbd"}, "body"),
    ],
)
def test_bad_pool_requests_are_422_and_make_nothing(node: Node, body: dict[str, Any],
                                                    field: str) -> None:
    before = node.counts()
    resp = node.api.post("/api/v1/storage/pools", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert node.counts() == before


def test_host_checks_refuse_a_pool_before_anything_is_made(node: Node, tmp_path: Path) -> None:
    before = node.counts()
    cases = [
        ({"name": "nfs", "type": "shared", "path": str(tmp_path / "not-mounted")},
         "not a directory on this host"),
        ({"name": "bad", "path": str(node.storage / "vms" / "x")}, "corral keeps for itself"),
        ({"name": "again", "path": str(node.storage)}, "storage pool default's"),
        ({"name": "ceph", "type": "rbd", "ceph_pool": "rbd",
          "ceph_conf": str(tmp_path / "no-ceph.conf")}, "is not a file on this host"),
    ]
    for body, message in cases:
        resp = node.api.post("/api/v1/storage/pools", json=body)
        assert resp.status_code in (409, 422), resp.text
        assert message in resp.json()["error"]["message"], resp.text
    assert node.counts() == before
    assert not (tmp_path / "not-mounted").exists()


def test_shared_pool_marks_its_directory(node: Node, tmp_path: Path) -> None:
    shared = tmp_path / "nfs"
    shared.mkdir(mode=0o755)
    node.ok(node.api.post("/api/v1/storage/pools",
                          json={"name": "nfs", "type": "shared", "path": str(shared)}))
    marker = json.loads((shared / ".corral-pool.json").read_text())
    assert marker["name"] == "nfs"
    pool = node.api.get("/api/v1/storage/pools/nfs").json()
    assert (pool["type"], pool["host"], pool["path"]) == ("shared", None, str(shared))
    twice = node.api.post("/api/v1/storage/pools",
                          json={"name": "nfs2", "type": "shared", "path": str(shared)})
    assert twice.status_code == 409 and "storage pool nfs's" in twice.json()["error"]["message"]
    node.ok(node.api.delete("/api/v1/storage/pools/nfs"))
    assert shared.is_dir() and not (shared / ".corral-pool.json").exists()


def test_a_stray_file_is_never_adopted(node: Node) -> None:
    stray = node.storage / "mine.raw"
    stray.write_bytes(b"precious")
    before = node.counts()
    resp = node.api.post("/api/v1/storage/pools/default/volumes",
                         json={"name": "mine", "size": "1M", "format": "raw"})
    assert resp.status_code == 409 and "not a corral volume" in resp.json()["error"]["message"]
    assert node.counts() == before
    assert stray.read_bytes() == b"precious"


def test_unknown_pool_and_volume_are_404(node: Node) -> None:
    assert node.api.get("/api/v1/storage/pools/nope").status_code == 404
    assert node.api.get("/api/v1/storage/pools/default/volumes/nope").status_code == 404
    resp = node.api.post("/api/v1/storage/pools/nope/volumes", json={"name": "v", "size": "1M"})
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "pool"
