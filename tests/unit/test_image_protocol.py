"""The engine's typed image, snapshot, clone, template and OVA calls
(corral.engine.agent_calls.images) against the agent's real routes (corral.agent.image_api,
clones, ova), in process, with the real qemu-img: what the engine sends must pass the
agent's body models, and what the agent answers (jobs' results too) must read back into the
engine's answer models. Domains are libvirt's test driver."""

from __future__ import annotations

import subprocess
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_transport import in_process, noting_paths
from fastapi import FastAPI
from test_agent_jobs import _Op

from corral.agent import clones, image_api, ova
from corral.agent.hypervisor import Hypervisor
from corral.agent.jobs import JobRunner
from corral.agent.jobs import router as jobs_router
from corral.agent.pools import host_registry
from corral.agent.storage import Storage
from corral.agent_api.images import OvaExportBody, OvaImportBody, OvaNic
from corral.agent_api.snapshots import CloneBody, SnapshotBody, TemplateBody
from corral.engine.agent_client import AgentClient
from corral.engine.agent_jobs import run_job
from corral.errors import InvalidInput, NotFound
from corral.httpserve import install_error_handlers
from corral.safepaths import PathPolicy

MIB = 1 << 20


@pytest.fixture()
def agent(tmp_path: Path) -> Iterator[tuple[AgentClient, Storage, list[str]]]:
    state = tmp_path / "agent"
    storage = Storage(state / "storage")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(storage.image_path("img")),
                    str(8 * MIB)], check=True)
    storage.create_disk("src", "img", None)
    hv = Hypervisor("test:///default")
    runner = JobRunner()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(jobs_router(runner))
    host = types.SimpleNamespace(storage=storage, virt=None, hv=hv)
    app.include_router(image_api.router(host, runner))  # type: ignore[arg-type]
    app.include_router(clones.router(storage, hv, runner))
    # OVAs are read from tmp_path only when allowed (corral.safepaths: nothing by default)
    paths = PathPolicy(import_dirs=(tmp_path,), protected=(state,))
    app.include_router(ova.router(storage, runner, host_registry(state, storage.root),
                                  lambda: paths))
    seen: list[str] = []
    client = AgentClient("http://agent", reconnect_s=0, transport=in_process(app, noting_paths(seen)))
    yield client, storage, seen
    client.close()


def test_images_clones_and_templates_round_trip(
        agent: tuple[AgentClient, Storage, list[str]]) -> None:
    a, storage, _seen = agent
    img = a.image("img")
    assert (img.format, img.virtual_size, img.users) == ("qcow2", 8 * MIB, ["src"])

    linked = a.linked_clone_disk("c1", "src")
    assert linked.created and linked.base is not None and linked.path.endswith("c1.qcow2")
    assert a.linked_clone_disk("c1", "src").created is False  # idempotent
    full = run_job(a, _Op("op-full"), a.full_clone_disk_job(  # type: ignore[arg-type]
        "c2", CloneBody(source="src")))
    assert full.created and Path(full.path) == storage.disk_path("c2")

    tpl = run_job(a, _Op("op-tpl"), a.template_job(  # type: ignore[arg-type]
        "tpl", TemplateBody(vm="c2")))
    assert tpl.format == "qcow2" and tpl.virtual_size == 8 * MIB and tpl.kernel is None
    assert a.delete_image("tpl").deleted is True
    with pytest.raises(NotFound):
        a.image("tpl")
    assert a.collect_bases().removed == []  # src and c1 still use their base


def test_a_job_refused_before_it_starts_is_the_agents_error(
        agent: tuple[AgentClient, Storage, list[str]]) -> None:
    a, _storage, seen = agent
    with pytest.raises(InvalidInput, match="must be absolute"):
        run_job(a, _Op(), a.export_ova_job(  # type: ignore[arg-type]
            "src", OvaExportBody(path="rel.ova", cpus=1, memory_mib=64)))
    assert seen == ["POST /v1/disks/src/export-ova"]  # no job, nothing to follow


def test_ova_export_then_import(agent: tuple[AgentClient, Storage, list[str]],
                                tmp_path: Path) -> None:
    a, _storage, _seen = agent
    path = tmp_path / "src.ova"
    body = OvaExportBody(path=str(path), cpus=2, memory_mib=128,
                         nics=[OvaNic(network="default", mac="52:54:00:00:00:01")])
    out = run_job(a, _Op("op-export"), a.export_ova_job("src", body))  # type: ignore[arg-type]
    assert out.created and out.path == str(path) and out.size == path.stat().st_size
    got = run_job(a, _Op("op-import"), a.import_ova_job(  # type: ignore[arg-type]
        "back", OvaImportBody(path=str(path))))
    assert got.format == "qcow2" and got.virtual_size == 8 * MIB
    assert (got.system.cpus, got.system.memory_mib) == (2, 128)
    assert [d.capacity for d in got.system.disks] == [8 * MIB]
    assert [n.mac for n in got.system.nics] == ["52:54:00:00:00:01"]


def test_snapshots_of_a_test_domain(agent: tuple[AgentClient, Storage, list[str]]) -> None:
    a, _storage, _seen = agent
    before = {s.name for s in a.snapshots("test")}
    made = a.create_snapshot("test", SnapshotBody(name="s1", description="first"))
    assert made.name == "s1" and made.description == "first"
    assert {s.name for s in a.snapshots("test")} == before | {"s1"}
    assert a.revert_snapshot("test", "s1").name == "test"
    assert a.delete_snapshot("test", "s1").deleted is True
    assert a.delete_snapshot("test", "s1").deleted is False
