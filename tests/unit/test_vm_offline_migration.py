"""Offline migration of a stopped VM (`corral vm migrate NAME --offline`) in the engine: the
checks that refuse before anything moves, and the operation, against stand-in agents whose
image and VM-file routes are the real ones (corral.agent.image_files, corral.agent.vm_files)
on one storage dir per host, with real qcow2 files: the image, the root disk and the UEFI
variables arrive on the target first (SHA-256 checked), then the seed and the definition,
then the row moves and the source forgets the VM; a failure or a cancel before the switch
leaves the VM whole on its host and nothing of it on the target."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent import image_files, vm_files
from corral.agent.jobs import JobRunner
from corral.agent.storage import Storage
from corral.api.migration import VmMigrate
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, StoragePool, Vm
from corral.engine.operations import OpContext
from corral.engine.services import vm_migration
from corral.engine.services.auth import create_token
from corral.httpserve import install_error_handlers

MAC = "52:54:00:00:00:07"
NVRAM = b"\x01uefi-vars" * 20_000


@dataclass
class FakeHost:
    """One host's agent: its real image and VM-file routes on its own storage dir, and
    stand-ins for domains (name -> state), seeds, ports and snapshots."""

    name: str
    storage: Storage
    domains: dict[str, str] = field(default_factory=dict)
    seeds: set[str] = field(default_factory=set)
    snapshots: dict[str, list[str]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    fail_define: bool = False
    gate: threading.Event | None = None  # a read of a VM file waits for it

    def __post_init__(self) -> None:
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(image_files.router(self.storage, JobRunner()))
        app.include_router(vm_files.router(self.storage, self.domains.get))

        @app.delete("/v1/images/{name}")
        def delete(name: str) -> dict[str, bool]:
            self.storage.delete_image(name)
            return {"deleted": True}

        self.client = TestClient(app, base_url="http://agent")

    def handle(self, req: httpx.Request) -> httpx.Response:
        what = f"{req.method} {req.url.path}"
        self.seen.append(what)
        parts = req.url.path.split("/")
        name = parts[3] if len(parts) > 3 else ""
        if req.url.path.startswith(("/v1/images/", "/v1/vms/")):
            if self.gate is not None and re.fullmatch(r"GET /v1/vms/[^/]+/files/\w+", what):
                assert self.gate.wait(20)
            headers = {k: v for k, v in req.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding", "host")}
            resp = self.client.request(req.method, str(req.url.copy_with(
                scheme="http", host="agent", port=None)), content=req.read(), headers=headers)
            return httpx.Response(resp.status_code, content=resp.content,
                                  headers={"content-type": resp.headers["content-type"]})
        if re.fullmatch(r"GET /v1/pools/shared/bases/tiny", what):  # a shared pool's base
            return httpx.Response(200, json={"present": True})
        if re.fullmatch(r"GET /v1/domains/[^/]+/snapshots", what):
            return httpx.Response(200, json=[
                {"name": n, "created_at": "2026-12-01T00:00:00Z", "state": "stopped",
                 "memory": False, "current": True} for n in self.snapshots.get(name, [])])
        if what.startswith("GET /v1/domains/"):
            if name not in self.domains:
                return _error(404, "not_found", f"no domain {name}")
            return httpx.Response(200, json={"name": name, "uuid": "u",
                                             "state": self.domains[name]})
        if what.startswith("PUT /v1/domains/"):
            if self.fail_define:
                return _error(502, "hypervisor_error", "libvirtd: no space left on device")
            assert f"<name>{name}</name>" in json.loads(req.read())["xml"]
            self.domains[name] = "stopped"
            return httpx.Response(200, json={"name": name, "uuid": "u", "state": "stopped"})
        if what.startswith("DELETE /v1/domains/"):
            return httpx.Response(200, json={"deleted": self.domains.pop(name, None) is not None})
        if what.startswith("DELETE /v1/disks/"):
            self.storage.delete_disk(name)
            return httpx.Response(200, json={"deleted": True})
        if what.startswith("PUT /v1/seeds/"):
            self.seeds.add(name)
            return httpx.Response(200, json={"path": f"/s/vms/{name}-cidata.iso", "size": 1})
        if what.startswith("DELETE /v1/seeds/"):
            self.seeds.discard(name)
            return httpx.Response(200, json={"deleted": True})
        if what.startswith("PUT /v1/ports/"):
            return httpx.Response(200, json={"tap": parts[-1], "id": 1})
        if what.startswith("DELETE /v1/ports/"):
            return httpx.Response(200, json={"deleted": True})
        if what.endswith("/leases"):
            return httpx.Response(200, json=[])
        return _error(404, "not_found", what)

    def vm_files(self, vm: str) -> list[str]:
        return sorted(p.name for p in self.storage.vms.iterdir() if p.name.startswith(vm))


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


@dataclass
class Engine:
    ctx: EngineContext
    client: TestClient
    hosts: dict[str, FakeHost]

    def migrate(self, vm: str = "cold", **body: Any) -> httpx.Response:
        resp: httpx.Response = self.client.post(f"/api/v1/vms/{vm}/migrate",
                                                json={"offline": True, **body})
        return resp

    def finish(self, resp: httpx.Response) -> dict[str, Any]:
        assert resp.status_code == 202, resp.text
        op = resp.json()
        assert op["type"] == "vm.migrate" and op["may_cancel"] is True
        return self.ctx.ops.wait(op["id"], timeout=30).model_dump(mode="json")

    def host_of(self, vm: str = "cold") -> str:
        return str(self.client.get(f"/api/v1/vms/{vm}").json()["host"])

    def order(self, host: str, what: str) -> int:
        """Where in everything the agents were asked (in order) ``what`` of ``host`` was."""
        return self.hosts[host].seen.index(what)


def _error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    return error


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    hosts: dict[str, FakeHost] = {}
    by_address: dict[str, FakeHost] = {}
    with ctx.db.session() as s:
        rows = []
        for i, (name, status) in enumerate((("h1", "up"), ("h2", "up"),
                                            ("h3", "maintenance")), 1):
            storage = Storage(tmp_path / name)
            hosts[name] = by_address[f"127.0.0.{i}"] = FakeHost(name, storage)
            row = Host(name=name, url=f"https://127.0.0.{i}:8444", status=status,
                       facts={"cpus": 2, "memory_mib": 4096, "virt_type": "qemu",
                              "storage_dir": str(storage.root),
                              "console_dir": str(tmp_path)})
            s.add(row)
            rows.append(row)
        h1 = hosts["h1"].storage
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(h1.image_path("tiny")),
                        "64M"], check=True, timeout=30)
        image = Image(name="tiny", status="ready", virtual_size=64 << 20,
                      file_size=h1.image_path("tiny").stat().st_size)
        net = Network(name="default", bridge="corral0", subnet="10.210.0.0/24",
                      gateway="10.210.0.1", dhcp_start="10.210.0.128",
                      dhcp_end="10.210.0.254")
        pool = StoragePool(name="shared", type="shared", path=str(tmp_path / "pool"),
                           status="ready")
        s.add_all([image, net, pool])
        s.flush()
        for name, root, state, hw in (
                ("cold", None, "stopped", {"firmware": "uefi"}),
                ("onshared", pool.id, "stopped", {}), ("warm", None, "running", {}),
                ("sealed", None, "stopped", {"tpm": True})):
            vm = Vm(name=name, image_id=image.id, host_id=rows[0].id, cpus=1,
                    memory_mib=512, disk_bytes=64 << 20, state=state, desired_power=state,
                    root_pool_id=root, hardware=hw,
                    cloud_init={"hostname": name} if name == "cold" else None)
            s.add(vm)
            s.flush()
            hosts["h1"].domains[name] = "running" if state == "running" else "stopped"
            if root is None:
                h1.create_disk(name, "tiny", None)
            if name == "cold":
                s.add(Nic(vm_id=vm.id, network_id=net.id, mac=MAC, idx=0))
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 2M", str(h1.disk_path("cold"))],
                   check=True, capture_output=True, timeout=30)
    (h1.vms / "cold.nvram.fd").write_bytes(NVRAM)
    hosts["h1"].seeds.add("cold")
    ctx.agent_transport = httpx.MockTransport(lambda r: by_address[r.url.host].handle(r))
    token = create_token(ctx, "admin")
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"})
    try:
        yield Engine(ctx, client, hosts)
    finally:
        ctx.ops.shutdown()


def _nothing_asked_of(engine: Engine, host: str) -> None:
    assert not [w for w in engine.hosts[host].seen if not w.startswith("GET ")]


def test_the_wrong_kind_of_move_is_refused_with_what_to_do(engine: Engine) -> None:
    stopped = _error_of(engine.client.post("/api/v1/vms/cold/migrate", json={"to": "h2"}), 409)
    assert "cold is stopped" in stopped["message"] and "--offline" in stopped["message"]
    running = _error_of(engine.migrate("warm", to="h2"), 409)
    assert running["message"] == ("VM warm is running: an offline migration moves a stopped "
                                  "VM (stop it first, or migrate it live (without --offline))")
    for body, name in (({"postcopy": True}, "postcopy"),
                       ({"max_downtime_ms": 200}, "max_downtime_ms")):
        assert _error_of(engine.migrate(to="h2", **body), 422)["field"] == name
    assert engine.host_of() == "h1"
    _nothing_asked_of(engine, "h2")


def test_a_target_that_cannot_take_it_is_refused(engine: Engine) -> None:
    same = _error_of(engine.migrate(to="h1"), 409)
    assert same["message"] == "VM cold is on host h1 already: name another host"
    down = _error_of(engine.migrate(to="h3"), 409)
    assert down["message"] == "host h3 is maintenance: a migration target must be up"
    assert "host nope not found" in _error_of(engine.migrate(to="nope"), 404)["message"]
    with engine.ctx.db.session() as s:
        h2 = s.query(Host).filter_by(name="h2").one()
        h2.facts = {**h2.facts, "memory_mib": 256}
    full = _error_of(engine.migrate(to="h2"), 409)
    assert full["code"] == "insufficient_resources"
    assert "host h2 cannot take VM cold: memory: needs 512 MiB" in full["message"]
    _nothing_asked_of(engine, "h2")


def test_what_the_move_cannot_carry_is_refused_by_name(engine: Engine) -> None:
    tpm = _error_of(engine.migrate("sealed", to="h2"), 409)
    assert tpm["field"] == "hardware.tpm" and "has a TPM" in tpm["message"]
    engine.hosts["h1"].snapshots["cold"] = ["before-upgrade"]
    snaps = _error_of(engine.migrate(to="h2"), 409)
    assert snaps["message"].startswith("VM cold has snapshots (before-upgrade)")
    engine.hosts["h1"].snapshots.clear()
    # A linked clone's disk is over a frozen base, not over its image.
    h1 = engine.hosts["h1"].storage
    base = h1.vms / "bases" / "x.qcow2"
    base.parent.mkdir(exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True,
                   timeout=30)
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                    str(h1.disk_path("sealed"))], check=True, timeout=30)
    with engine.ctx.db.session() as s:
        s.query(Vm).filter_by(name="sealed").one().hardware = {}
    clone = _error_of(engine.migrate("sealed", to="h2"), 409)
    assert clone["field"] == "storage" and "linked clone" in clone["message"]
    _nothing_asked_of(engine, "h2")


def test_a_stopped_vm_moves_with_its_disk_its_uefi_variables_and_its_seed(
        engine: Engine) -> None:
    h1, h2 = engine.hosts["h1"], engine.hosts["h2"]
    done = engine.finish(engine.migrate(to="h2", bandwidth_mib_s=1000))
    assert done["status"] == "success", done
    assert re.fullmatch(r"moved offline from h1 to h2 \(\d+ MiB copied\)", done["message"]), \
        done["message"]
    assert engine.host_of() == "h2"
    with engine.ctx.db.session() as s:
        assert s.query(Vm).filter_by(name="cold").one().state == "stopped"
    said = [e.data["message"] for e in engine.ctx.bus.recent
            if e.type == "operation" and e.data["id"] == done["id"]]
    assert "copying VM cold from h1 to h2: 2 MiB of 2 MiB" in said  # progress in bytes
    # On the target: the image, the disk over the target's own image with the guest's
    # data, the NVRAM byte for byte, the seed, the definition.
    disk = h2.storage.disk_path("cold")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)],
                                     check=True, capture_output=True, timeout=30).stdout)
    assert info["backing-filename"] == str(h2.storage.image_path("tiny"))
    read = subprocess.run(["qemu-io", "-c", "read -P 0x5a 0 2M", str(disk)],
                          capture_output=True, text=True, timeout=30)
    assert read.returncode == 0 and "verification failed" not in read.stdout
    assert (h2.storage.vms / "cold.nvram.fd").read_bytes() == NVRAM
    assert h2.domains == {"cold": "stopped"} and h2.seeds == {"cold"}
    # Nothing of it is left on the source; the image stays there (other VMs use it).
    assert "cold" not in h1.domains and "cold" not in h1.seeds
    assert h1.vm_files("cold") == [] and h1.storage.image_path("tiny").exists()
    # Everything was on the target before the source let go of anything.
    defined = engine.order("h2", "PUT /v1/domains/cold")
    assert engine.order("h2", "PUT /v1/vms/cold/files/root") < defined
    assert engine.order("h2", "PUT /v1/vms/cold/files/nvram") < defined
    assert engine.order("h2", "PUT /v1/seeds/cold") < defined
    assert "DELETE /v1/vms/cold/files/root" not in h2.seen  # nothing undone on the target
    events = [e.data for e in engine.ctx.bus.recent if e.type == "vm"
              and e.data.get("event") == "migrated"]
    assert events[-1] == {"name": "cold", "state": "stopped", "event": "migrated",
                          "offline": True, "from": "h1", "to": "h2",
                          "operation": done["id"]}


def test_a_vm_on_a_shared_pool_moves_without_copying_its_disk(engine: Engine) -> None:
    h1, h2 = engine.hosts["h1"], engine.hosts["h2"]
    done = engine.finish(engine.migrate("onshared", to="h2"))
    assert done["status"] == "success", done
    assert done["message"] == "moved offline from h1 to h2"
    assert engine.host_of("onshared") == "h2" and h2.domains == {"onshared": "stopped"}
    assert "onshared" not in h1.domains
    assert not [w for w in h2.seen if w.startswith("PUT /v1/vms/")]
    assert not [w for w in h1.seen
                if w.startswith(("DELETE /v1/disks/", "GET /v1/vms/onshared/files/"))]


def test_a_failure_before_the_switch_leaves_it_whole_where_it_was(engine: Engine) -> None:
    h1, h2 = engine.hosts["h1"], engine.hosts["h2"]
    h2.fail_define = True
    done = engine.finish(engine.migrate(to="h2"))
    assert done["status"] == "failure"
    assert "no space left on device" in done["error"]["message"]
    assert engine.host_of() == "h1"
    assert h1.domains["cold"] == "stopped" and "cold" in h1.seeds
    assert h1.vm_files("cold") == ["cold.nvram.fd", "cold.qcow2"]
    # What the target got went again: disk, NVRAM, seed (the image is a cache: it stays).
    assert h2.vm_files("cold") == [] and h2.seeds == set() and h2.domains == {}
    assert "DELETE /v1/vms/cold/files/root" in h2.seen


def test_a_cancel_during_the_copy_stops_it_and_leaves_nothing_there(engine: Engine) -> None:
    h1, h2 = engine.hosts["h1"], engine.hosts["h2"]
    h1.gate = threading.Event()
    resp = engine.migrate(to="h2")
    assert resp.status_code == 202, resp.text
    op_id = resp.json()["id"]
    for _ in range(400):  # 20 s at most
        if "GET /v1/vms/cold/files/root" in h1.seen:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the copy never started")
    assert engine.client.delete(f"/api/v1/operations/{op_id}").status_code == 200
    h1.gate.set()
    done = engine.ctx.ops.wait(op_id, timeout=30)
    assert done.status.value == "cancelled", done
    assert engine.host_of() == "h1" and h1.vm_files("cold") == ["cold.nvram.fd", "cold.qcow2"]
    assert h2.vm_files("cold") == [] and h2.domains == {} and h2.seeds == set()


def test_leftovers_of_an_interrupted_run_are_cleared_first(engine: Engine) -> None:
    """An engine that died mid-copy: the target has a disk and a definition, the row still
    names the source. The next run removes them and moves the VM whole."""
    h2 = engine.hosts["h2"]
    (h2.storage.vms / "cold.nvram.fd").write_bytes(b"half")
    h2.domains["cold"] = "stopped"
    done = engine.finish(engine.migrate(to="h2"))
    assert done["status"] == "success", done
    assert (h2.storage.vms / "cold.nvram.fd").read_bytes() == NVRAM
    assert engine.host_of() == "h2"


def test_evacuation_moves_a_stopped_vm_off_a_host_in_maintenance(engine: Engine) -> None:
    """What `host maintenance` calls: no target named (the scheduler picks, the VM's own
    host excluded, h3 in maintenance), the source in maintenance itself."""
    with engine.ctx.db.session() as s:
        s.query(Host).filter_by(name="h1").one().status = "maintenance"
    op = vm_migration.migrate(engine.ctx, "cold", VmMigrate(offline=True))
    done = engine.ctx.ops.wait(op.id, timeout=30)
    assert done.status.value == "success", done
    assert engine.host_of() == "h2"


def test_a_user_may_not_migrate_offline(engine: Engine) -> None:
    from engine_seed import client_as

    refused = _error_of(client_as(engine.ctx, "user").post(
        "/api/v1/vms/cold/migrate", json={"offline": True, "to": "h2"}), 403)
    assert "vm.migrate" in refused["message"]


class _Op:
    """The executor's side of an operation an engine resumes: its params and messages."""

    id = "op-resumed"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.messages: list[str] = []

    def progress(self, percent: int, message: str | None = None) -> None:
        self.messages.append(message or "")

    def check_cancelled(self) -> None:
        pass


def test_a_run_resumed_after_the_switch_only_finishes_the_sources_side(
        engine: Engine) -> None:
    """An engine that died after the row named the target: the run it resumes copies
    nothing again and removes what the source still has."""
    h1, h2 = engine.hosts["h1"], engine.hosts["h2"]
    with engine.ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name="cold").one()
        ids = {h.name: h.id for h in s.query(Host)}
        vm.host_id = ids["h2"]
        params = {"offline": True, "vm_id": vm.id, "source_id": ids["h1"],
                  "target_id": ids["h2"], "bandwidth_mib_s": None}
    h2.domains["cold"] = "stopped"
    op = _Op(params)
    vm_migration.execute(engine.ctx, cast(OpContext, op))
    assert op.messages[-1] == "moved offline from h1 to h2"
    assert "cold" not in h1.domains and h1.vm_files("cold") == [] and "cold" not in h1.seeds
    assert h2.domains == {"cold": "stopped"}
    assert not [w for w in h2.seen if not w.startswith("GET ")]  # nothing sent again
