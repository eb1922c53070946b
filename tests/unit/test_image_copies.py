"""Images across hosts (corral.engine.services.image_copies): a host without a VM's image
gets it from a host that has it, relayed by the engine from one agent's image-file routes
to the other's (the real routes of corral.agent.image_files, in process, one storage dir
per host), SHA-256 checked on the target; a refused or broken copy leaves nothing there; a
shared pool that holds the image's base spares the copy."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from engine_seed import admin_client
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent import image_files
from corral.agent.jobs import JobRunner
from corral.agent.storage import Storage
from corral.agent_api.image_files import FileKind
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network
from corral.engine.operations import OpContext
from corral.engine.services import image_copies
from corral.errors import InvalidInput, Unavailable

DISK = os.urandom(3 << 20)  # more than one chunk
BOOT = {"vmlinuz": b"kernel" * 1000, "initrd": b"initrd" * 1000, "cmdline": b"console=ttyS0\n"}


@dataclass
class FakeHost:
    """One host's agent: its real image-file routes on its own storage dir, and just enough
    of the rest (disks, domains, ports) for a VM create."""

    name: str
    storage: Storage
    in_pool: bool = False  # what GET /v1/pools/P/bases/IMAGE answers
    seen: list[str] = field(default_factory=list)
    defined: list[str] = field(default_factory=list)  # domain XML sent
    cut_reads: bool = False  # a read that breaks off after 1 MiB

    def __post_init__(self) -> None:
        app = FastAPI()
        from corral.httpserve import install_error_handlers

        install_error_handlers(app)
        app.include_router(image_files.router(self.storage, JobRunner()))

        @app.delete("/v1/images/{name}")
        def delete(name: str) -> dict[str, bool]:
            self.storage.delete_image(name)
            return {"deleted": True}

        self.client = TestClient(app, base_url="http://agent")

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.storage.images.iterdir())}

    def handle(self, req: httpx.Request) -> httpx.Response:
        what = f"{req.method} {req.url.path}"
        self.seen.append(what)
        if re.fullmatch(r"GET /v1/pools/\w+/bases/\w+", what):
            return httpx.Response(200, json={"present": self.in_pool})
        if req.url.path.startswith("/v1/images/"):
            headers = {k: v for k, v in req.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding", "host")}
            resp = self.client.request(req.method, str(req.url.copy_with(scheme="http",
                                                                         host="agent", port=None)),
                                       content=req.read(), headers=headers)
            content = resp.content
            if self.cut_reads and req.method == "GET" and what.endswith("/qcow2"):
                content = content[:1 << 20]
            return httpx.Response(resp.status_code, content=content,
                                  headers={"content-type": resp.headers["content-type"]})
        if what.startswith("PUT /v1/disks/") or what.startswith("PUT /v1/ports/"):
            return httpx.Response(200, json={"path": "/d", "created": True, "tap": "t", "id": 1})
        if what.startswith("PUT /v1/domains/"):
            self.defined.append(json.loads(req.read())["xml"])
        if req.url.path.startswith("/v1/domains/"):
            state = "running" if what.endswith("/start") else "stopped"
            return httpx.Response(200, json={"name": "web", "uuid": "u", "state": state})
        if what.endswith("/leases"):
            return httpx.Response(200, json=[])
        return httpx.Response(404, json={"error": {"code": "not_found", "message": what}})


@dataclass
class Cluster:
    ctx: EngineContext
    hosts: dict[str, FakeHost]
    ids: dict[str, str]


@pytest.fixture(name="c")
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    hosts: dict[str, FakeHost] = {}
    ids: dict[str, str] = {}
    with ctx.db.session() as s:
        for i, name in enumerate(("h1", "h2", "h3"), 1):
            storage = Storage(tmp_path / name)
            hosts[f"10.210.0.{i}"] = FakeHost(name, storage)
            row = Host(name=name, url=f"https://10.210.0.{i}:8443", status="up",
                       facts={"memory_mib": 4096, "cpus": 2, "virt_type": "qemu",
                              "storage_dir": str(storage.root), "console_dir": str(tmp_path)})
            s.add(row)
            s.flush()
            ids[name] = row.id
        s.add(Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=len(DISK),
                    kernel="/x/tiny.vmlinuz", initrd="/x/tiny.initrd", cmdline="console=ttyS0"))
        s.add(Network(name="default", bridge="corral0", subnet="10.210.9.0/24",
                      gateway="10.210.9.1", dhcp_start="10.210.9.128", dhcp_end="10.210.9.254"))
    ctx.agent_transport = httpx.MockTransport(lambda r: hosts[r.url.host].handle(r))
    h1 = hosts["10.210.0.1"]
    (h1.storage.images / "tiny.qcow2").write_bytes(DISK)
    for kind, data in BOOT.items():
        (h1.storage.images / f"tiny.{kind}").write_bytes(data)
    yield Cluster(ctx, {h.name: h for h in hosts.values()}, ids)
    ctx.ops.shutdown()


class Op:
    """The operation's side of a copy: its progress messages."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def progress(self, percent: int, message: str | None = None) -> None:
        self.messages.append(message or "")

    def check_cancelled(self) -> None:
        pass


def _ensure(c: Cluster, host: str, op: Op | None = None, pool: str | None = None,
            boot: tuple[FileKind, ...] = ("vmlinuz", "initrd", "cmdline")) -> None:
    image_copies.ensure(c.ctx, cast(OpContext, op or Op()), c.ids[host], "tiny", "qcow2",
                        list(boot), len(DISK), pool)


def test_a_host_without_the_image_gets_it_whole_from_one_that_has_it(c: Cluster) -> None:
    op = Op()
    _ensure(c, "h2", op)
    assert c.hosts["h2"].files() == c.hosts["h1"].files()  # disk, kernel, initrd, cmdline
    assert any("copying image tiny from host h1 to host h2" in m for m in op.messages)
    assert "SHA-256 checked" in op.messages[-1]
    # Cached there: the next VM on h2 asks h2 only, and h1 nothing.
    c.hosts["h1"].seen.clear()
    _ensure(c, "h2")
    assert c.hosts["h1"].seen == []
    assert c.hosts["h2"].seen[-1] == "GET /v1/images/tiny/files"
    # A third host may now get it from either; the first by name that has it serves.
    _ensure(c, "h3")
    assert c.hosts["h3"].files() == c.hosts["h1"].files()


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(
        c: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # The source announces digests its bytes do not have (a corrupted read, say).
    monkeypatch.setattr(image_files, "sha256_of", lambda path: hashlib.sha256(b"x").hexdigest())
    with pytest.raises(InvalidInput, match="checksum mismatch") as err:
        _ensure(c, "h2")
    assert err.value.field == "sha256"
    assert c.hosts["h2"].files() == {}  # no file, no .part


def test_a_copy_cut_short_leaves_nothing(c: Cluster) -> None:
    c.hosts["h1"].cut_reads = True
    with pytest.raises(InvalidInput, match="cut short"):
        _ensure(c, "h2")
    assert c.hosts["h2"].files() == {}  # the boot files copied before it went too


def test_a_shared_pool_holding_the_base_spares_the_copy(
        c: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    real = image_files.sha256_of
    monkeypatch.setattr(image_files, "sha256_of", lambda p: hashed.append(p.name) or real(p))
    c.hosts["h2"].in_pool = True
    _ensure(c, "h2", pool="shared1")
    assert sorted(hashed) == ["tiny.cmdline", "tiny.initrd", "tiny.vmlinuz"]  # not the disk
    # Only the direct-boot files travel (QEMU reads them on the host); the disk does not.
    assert sorted(c.hosts["h2"].files()) == ["tiny.cmdline", "tiny.initrd", "tiny.vmlinuz"]
    assert "GET /v1/images/tiny/files/qcow2" not in c.hosts["h1"].seen
    c.hosts["h1"].seen.clear()
    c.hosts["h3"].in_pool = True
    _ensure(c, "h3", pool="shared1", boot=())  # an image without direct boot: nothing at all
    assert c.hosts["h3"].files() == {} and c.hosts["h1"].seen == []


def test_an_image_on_no_host_that_is_up_is_a_503(c: Cluster) -> None:
    with c.ctx.db.session() as s:
        h1 = s.get(Host, c.ids["h1"])
        assert h1 is not None
        h1.status = "unresponsive"
    with pytest.raises(Unavailable, match="on no other host that is up"):
        _ensure(c, "h2")
    assert c.hosts["h2"].files() == {}


def test_a_vm_created_on_a_host_without_its_image_gets_it_and_shows_the_copy(
        c: Cluster) -> None:
    client = admin_client(c.ctx)
    resp = client.post("/api/v1/vms", json={"name": "web", "image": "tiny", "memory": "128M",
                                            "host": "h2", "start": True})
    assert resp.status_code == 202, resp.text
    op: dict[str, Any] = client.get(f"/api/v1/operations/{resp.json()['id']}/wait",
                                    params={"timeout": 30}).json()
    assert op["status"] == "success", op
    assert c.hosts["h2"].files() == c.hosts["h1"].files()
    shown = [e.data.get("message") or "" for e in c.ctx.bus.recent if e.type == "operation"]
    assert any("copying image tiny from host h1 to host h2" in m for m in shown)
    # The domain boots the kernel beside the image on h2, not a path of h1.
    [xml] = c.hosts["h2"].defined
    h2_images = c.hosts["h2"].storage.images
    assert f"<kernel>{h2_images}/tiny.vmlinuz</kernel>" in xml
    assert f"<initrd>{h2_images}/tiny.initrd</initrd>" in xml
