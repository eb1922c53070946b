"""The engine's typed pool, volume, root-disk and disk calls (corral.engine.agent_calls.pools)
against the agent's real routes (corral.agent.pools.routes, root_routes), in process.

The engine's AgentClient sends through an ``httpx.MockTransport`` that hands each request to
the agent's FastAPI app, so what the engine sends must pass the agent's body models and what
the agent answers must read back into the engine's answer models. Pools are dir pools in
tmp_path with real qemu-img files; domains are libvirt's test driver (which cannot hot-plug:
its refusals check the error path).
"""

from __future__ import annotations

import json
import subprocess
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_transport import in_process, noting_json
from fastapi import FastAPI
from qemu_reach import let_qemu_reach

from corral.agent.hypervisor import Hypervisor
from corral.agent.jobs import JobRunner
from corral.agent.pools import host_registry, root_routes
from corral.agent.pools.roots import RootDisks
from corral.agent.pools.routes import router as pools_router
from corral.agent.storage import Storage
from corral.agent_api.pools import AttachBody, DetachBody, PoolBody, VolumeBody
from corral.engine.agent_client import AgentClient
from corral.engine.db.models import StoragePool
from corral.engine.services import pools
from corral.errors import Conflict, CorralError, HostError, NotFound
from corral.httpserve import install_error_handlers

MIB = 1 << 20


@dataclass
class Agent:
    client: AgentClient
    state: Path
    storage: Storage
    sent: list[tuple[str, str, Any]] = field(default_factory=list)  # method, path, JSON body

    def body(self, method: str, path: str) -> Any:
        return next(b for m, p, b in reversed(self.sent) if (m, p) == (method, path))


@pytest.fixture()
def agent(tmp_path: Path) -> Iterator[Agent]:
    state = tmp_path / "agent"
    storage = Storage(state / "storage")
    let_qemu_reach(tmp_path)  # QEMU's user must reach pool files; pools check it
    app = FastAPI()
    install_error_handlers(app)  # the agent's error answers, which AgentClient rebuilds
    app.include_router(pools_router(state, storage.root, Hypervisor("test:///default")))
    app.include_router(root_routes.router(state, storage, JobRunner()))
    sent: list[tuple[str, str, Any]] = []
    client = AgentClient("http://agent", reconnect_s=0,
                         transport=in_process(app, noting_json(sent)))
    yield Agent(client, state, storage, sent)
    client.close()


def _pool(tmp_path: Path, name: str = "fast") -> StoragePool:
    return StoragePool(id="p-1", name=name, type="dir", path=str(tmp_path / name))


def test_pool_and_volume_calls_round_trip(agent: Agent, tmp_path: Path) -> None:
    a, row = agent.client, _pool(tmp_path)
    body = pools.agent_body(row)
    assert a.check_pool("fast", body).ok is True
    setup = a.ensure_pool("fast", body)
    assert setup.capacity >= setup.available > 0 and setup.monitors is None
    # What the engine sent is exactly the agent's body model, every field spelled out.
    assert PoolBody.model_validate(agent.body("PUT", "/v1/pools/fast")) == body
    assert agent.body("PUT", "/v1/pools/fast") == {
        "type": "dir", "id": "p-1", "path": str(tmp_path / "fast"), "ceph_conf": None,
        "ceph_pool": None, "marker": "write"}
    assert a.pool_stats("fast").capacity == setup.capacity

    data = a.create_volume("fast", "data", 2 * MIB)
    assert (data.name, data.format, data.capacity) == ("data", "qcow2", 2 * MIB)
    assert data.source == str(tmp_path / "fast" / "data.qcow2") and Path(data.source).exists()
    assert VolumeBody.model_validate(agent.body("PUT", "/v1/pools/fast/volumes/data")).size \
        == 2 * MIB
    scratch = a.create_volume("fast", "scratch", MIB, "raw")
    assert scratch.format == "raw" and scratch.allocation < MIB  # sparse
    assert [v.name for v in a.volumes("fast")] == ["data", "scratch"]
    assert a.volume("fast", "data") == data
    assert a.resize_volume("fast", "data", 4 * MIB).capacity == 4 * MIB

    with pytest.raises(NotFound) as gone:
        a.volume("fast", "nope")
    assert not gone.value.details.get("pool_missing")
    with pytest.raises(NotFound) as no_pool:
        a.volume("nopool", "data")
    assert no_pool.value.details.get("pool_missing") is True  # volumes.create tells them apart

    assert a.delete_volume("fast", "data").deleted is True
    assert a.delete_volume("fast", "data").deleted is False  # idempotent
    assert a.delete_volume("fast", "scratch").deleted is True
    assert a.forget_pool("fast").deleted is True
    assert a.forget_pool("fast").deleted is False


def test_a_shared_pool_marker_goes_in_the_body(agent: Agent, tmp_path: Path) -> None:
    shared = tmp_path / "nfs"
    shared.mkdir(mode=0o755)
    row = StoragePool(id="p-2", name="nfs", type="shared", path=str(shared))
    agent.client.ensure_pool("nfs", pools.agent_body(row, "write"))
    assert json.loads((shared / ".corral-pool.json").read_text())["id"] == "p-2"
    # A second host verifies the marker the first wrote: here the same host, so it passes.
    assert agent.client.ensure_pool("nfs", pools.agent_body(row, "verify")).available > 0
    assert agent.body("PUT", "/v1/pools/nfs")["marker"] == "verify"


def test_root_disk_calls_read_the_agents_answers(agent: Agent, tmp_path: Path) -> None:
    a = agent.client
    a.ensure_pool("fast", pools.agent_body(_pool(tmp_path)))
    image = agent.storage.image_path("img")
    image.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(MIB)], check=True)
    # Made as the job of POST /v1/pools/fast/roots/src would (corral.engine.agent_jobs).
    RootDisks(host_registry(agent.state, agent.storage.root), agent.storage).create(
        "fast", "src", "img", None)
    clone = a.linked_clone_root("fast", "new", "src")
    assert clone.created is True and clone.source == str(tmp_path / "fast" / ".vms" / "new.qcow2")
    assert clone.base is not None and clone.base.endswith("src@new.qcow2")
    assert agent.body("PUT", "/v1/pools/fast/roots/new/linked-clone") == {"source": "src",
                                                                          "snapshot": None}
    assert a.linked_clone_root("fast", "new", "src").created is False  # idempotent
    first = a.delete_root("fast", "src")
    assert (first.deleted, first.bases_removed) == (True, [])  # the clone still needs them
    last = a.delete_root("fast", "new")
    assert last.deleted is True and sorted(last.bases_removed) == ["img.img.qcow2",
                                                                   "src@new.qcow2"]
    assert a.delete_root("fast", "new").deleted is False


def test_disk_calls_of_domains(agent: Agent) -> None:
    a = agent.client
    (disk,) = a.domain_disks("test")  # the test driver's running domain
    assert (disk.target, disk.bus, disk.source) == ("vda", "virtio", "/guest/diskimage1")
    # Absent from the domain: nothing to unplug, and that is no error (idempotent).
    gone = a.detach_disk("test", "/srv/none.qcow2")
    assert (gone.live, gone.config) == (False, False)
    assert DetachBody.model_validate(agent.body("POST", "/v1/domains/test/disks/detach"))
    xml = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
           "<source file='/srv/x.raw'/><target dev='vdb' bus='virtio'/></disk>")
    with pytest.raises(CorralError):  # the test driver cannot hot-plug: the agent says so
        a.attach_disk("test", xml)
    sent = AttachBody.model_validate(agent.body("POST", "/v1/domains/test/disks/attach"))
    assert (sent.xml, sent.controller_xml) == (xml, None)
    with pytest.raises(NotFound):
        a.detach_disk("nope", "/srv/x.raw")


def test_answers_from_another_agent_version(tmp_path: Path) -> None:
    """Fields an agent adds are ignored; an answer missing what the engine needs is a
    HostError naming the field, never a KeyError."""
    answers = {"/v1/pools/p": {"capacity": 3, "allocation": 1, "available": 2, "tier": "ssd"},
               "/v1/pools/p/volumes/v": {"name": "v", "format": "qcow2", "capacity": 1}}

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[request.url.path])

    client = AgentClient("http://agent", transport=httpx.MockTransport(handle))
    assert client.pool_stats("p").available == 2
    with pytest.raises(HostError, match=r"cannot read.*allocation"):
        client.volume("p", "v")
    client.close()


def _hosts(failing: str | None, seen: list[tuple[str, str]]) -> dict[str, AgentClient]:
    """Three hosts' agents (MockTransport) noting each PUT's marker and each DELETE."""

    def agent(name: str) -> AgentClient:
        def handle(request: httpx.Request) -> httpx.Response:
            if request.method == "DELETE":
                seen.append((name, "forget"))
                return httpx.Response(200, json={"deleted": True})
            seen.append((name, PoolBody.model_validate_json(request.content).marker))
            if name == failing:
                return httpx.Response(409, json={"error": {"code": "conflict",
                                                           "message": "no marker here"}})
            return httpx.Response(200, json={"capacity": 9, "allocation": 1, "available": 8})

        return AgentClient(f"http://{name}", transport=httpx.MockTransport(handle))

    return {name: agent(name) for name in ("h1", "h2", "h3")}


@pytest.mark.parametrize("failing", [None, "h1", "h3"])
def test_a_shared_pool_is_written_by_one_host_and_verified_by_the_others(
        failing: str | None) -> None:
    seen: list[tuple[str, str]] = []
    agents = _hosts(failing, seen)
    ctx = types.SimpleNamespace(agent=agents.__getitem__)
    op = types.SimpleNamespace(progress=lambda *_args: None)
    row = StoragePool(id="p-3", name="nfs", type="shared", path="/srv/nfs")
    writes, verifies = pools.agent_body(row, "write"), pools.agent_body(row, "verify")
    hosts = ["h1", "h2", "h3"]
    if failing is None:
        facts = pools._set_up(ctx, op, "nfs", hosts, writes, verifies)  # type: ignore[arg-type]
        assert facts.available == 8
    else:
        with pytest.raises(Conflict, match="no marker here"):
            pools._set_up(ctx, op, "nfs", hosts, writes, verifies)  # type: ignore[arg-type]
    assert seen[0] == ("h1", "write")  # the marker is written before anyone reads it
    if failing == "h1":
        assert seen == [("h1", "write"), ("h1", "forget")]  # the others are never asked
    else:
        assert sorted(seen[1:3]) == [("h2", "verify"), ("h3", "verify")]
        forgotten = sorted(h for h, what in seen if what == "forget")
        assert forgotten == ([] if failing is None else hosts)  # all or none
