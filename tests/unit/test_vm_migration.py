"""Live migration in the engine (`POST /api/v1/vms/{name}/migrate`), with stand-in agents:
the checks that refuse before anything moves (a stopped VM, a target unknown, down, the
VM's own host or full, a disk on a host's own storage, no permission), and the operation:
ports pushed to the target first, the source agent's migration job, the VM's host moved,
the source's ports dropped and an event with the downtime; a failed job leaves the VM
where it was and nothing on the target."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import client_as
from fastapi.testclient import TestClient

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, Operation, StoragePool, Vm
from corral.engine.services import cluster_settings, vm_migration
from corral.engine.services.auth import create_token

MAC = "52:54:00:00:00:01"


@dataclass
class Agents:
    """Stand-in agents of h1-h3 (by the address of their URL): where domain ``web`` runs,
    what each was asked, and how the migration job ends."""

    on: dict[str, str] = field(default_factory=lambda: {"web": "h1", "local": "h1"})
    fail_job: bool = False
    hold_job: bool = False  # the job runs until it is cancelled
    cancelled: bool = False
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (host, method, path)
    bodies: dict[str, Any] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = {"127.0.0.1": "h1", "127.0.0.2": "h2", "127.0.0.3": "h3"}[request.url.host]
        path, method = request.url.path, request.method
        self.seen.append((host, method, path))
        parts = path.split("/")  # "", "v1", "domains", NAME, ...
        vm = parts[3] if len(parts) > 3 and parts[2] == "domains" else ""
        if len(parts) == 4 and vm and method == "GET":
            if host != self.on.get(vm):
                return httpx.Response(404, json={"error": {"code": "not_found",
                                                           "message": f"no domain {vm}"}})
            return httpx.Response(200, json={"name": vm, "uuid": "u", "vm_id": None,
                                             "state": "running"})
        if path == f"/v1/domains/{vm}/migrate":
            self.bodies["migrate"] = json.loads(request.content)
            if self.hold_job:
                return httpx.Response(200, json=_job("running"))
            if self.fail_job:
                return httpx.Response(200, json=_job("failure", error={
                    "code": "hypervisor_error", "message": "target libvirtd went away"}))
            self.on[vm] = "h2"
            return httpx.Response(200, json=_job("success", result={
                "destination": self.bodies["migrate"]["destination"], "downtime_ms": 42,
                "total_ms": 3100, "memory_bytes": 1 << 27, "iterations": 3,
                "tls": self.bodies["migrate"]["tls"]}))
        if path == "/v1/jobs/j1":
            if method == "DELETE":
                self.cancelled = True
                return httpx.Response(200, json=_job("running"))
            time.sleep(0.05)  # a long poll that answers soon: the test's clock, not 5 s
            if self.cancelled:  # the agent's job aborted: the guest stays on the source
                return httpx.Response(200, json=_job("failure", error={
                    "code": "conflict", "message": "vm.migrate domain:web was cancelled"}))
            return httpx.Response(200, json=_job("running", progress=40,
                                                 message="iteration 1: 60 MiB of 128 MiB left"))
        if path == "/v1/images/tiny/files":
            return httpx.Response(200, json={"files": [{"kind": "qcow2", "size": 1 << 20}]})
        if path.startswith("/v1/ports/"):
            if method == "PUT":
                return httpx.Response(200, json={"tap": path.rsplit("/", 1)[1], "id": 1})
            return httpx.Response(200, json={"deleted": True})
        if path.startswith("/v1/networks/") and path.endswith("/leases"):
            return httpx.Response(200, json=[])
        if vm and method == "POST":  # destroy (cleanup)
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})
        if vm and method == "DELETE":
            return httpx.Response(200, json={"deleted": False})
        if path.startswith("/v1/disks/"):
            if method == "PUT":
                return httpx.Response(200, json={"path": f"/s/vms/{vm}.qcow2", "created": True})
            return httpx.Response(200, json={"deleted": True})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    def asked(self, host: str, method: str, prefix: str) -> list[str]:
        return [p for h, m, p in self.seen if h == host and m == method and p.startswith(prefix)]


def _job(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "j1", "kind": "vm.migrate", "key": "domain:web", "status": status,
            "progress": 100 if status == "success" else 0, "version": 3, **fields}


def _wait_for(what: str, check: Any) -> None:
    for _ in range(400):  # 20 s at most
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Engine:
    ctx: EngineContext
    client: TestClient
    agents: Agents

    def migrate(self, vm: str = "web", **body: Any) -> httpx.Response:
        return self.client.post(f"/api/v1/vms/{vm}/migrate", json=body)

    def host_of(self, vm: str = "web") -> str:
        with self.ctx.db.session() as s:
            row = s.query(Vm).filter_by(name=vm).one()
            host = s.get(Host, row.host_id)
            assert host is not None
            return host.name

    def finish(self, resp: httpx.Response) -> dict[str, Any]:
        assert resp.status_code == 202, resp.text
        op = resp.json()
        assert op["type"] == "vm.migrate" and op["may_cancel"] is True
        return self.ctx.ops.wait(op["id"], timeout=30).model_dump(mode="json")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    agents = Agents()
    ctx.agent_transport = httpx.MockTransport(agents)
    facts = {"cpus": 2, "memory_mib": 2048, "virt_type": "qemu",
             "storage_dir": str(tmp_path), "console_dir": str(tmp_path)}
    with ctx.db.session() as s:
        hosts = [Host(name="h1", url="https://127.0.0.1:8444", status="up", facts=facts),
                 Host(name="h2", url="https://127.0.0.2:8444", status="up", facts=facts),
                 Host(name="h3", url="https://127.0.0.3:8444", status="maintenance",
                      facts=facts)]
        s.add_all(hosts)
        image = Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=1 << 20)
        net = Network(name="default", bridge="corral0", subnet="10.210.0.0/24",
                      gateway="10.210.0.1", dhcp_start="10.210.0.128", dhcp_end="10.210.0.254")
        pool = StoragePool(name="shared", type="shared", path=str(tmp_path / "pool"),
                           status="ready")
        s.add_all([image, net, pool])
        s.flush()
        for name, root, state in (("web", pool.id, "running"), ("idle", pool.id, "stopped"),
                                  ("local", None, "running")):
            vm = Vm(name=name, image_id=image.id, host_id=hosts[0].id, cpus=1,
                    memory_mib=512, disk_bytes=64 << 20, state=state,
                    desired_power=state, root_pool_id=root)
            s.add(vm)
            s.flush()
            if name == "web":
                s.add(Nic(vm_id=vm.id, network_id=net.id, mac=MAC, idx=0))
    token = create_token(ctx, "admin")
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"})
    try:
        yield Engine(ctx, client, agents)
    finally:
        ctx.ops.shutdown()


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    return error


def test_a_stopped_vm_is_refused(engine: Engine) -> None:
    error = _error(engine.migrate("idle", to="h2"), 409)
    assert "idle is stopped" in error["message"] and "running VM" in error["message"]


def test_an_unknown_a_down_and_the_same_host_are_refused(engine: Engine) -> None:
    assert "host nope not found" in _error(engine.migrate(to="nope"), 404)["message"]
    down = _error(engine.migrate(to="h3"), 409)
    assert down["message"] == "host h3 is maintenance: a migration target must be up"
    same = _error(engine.migrate(to="h1"), 409)
    assert "already runs on host h1" in same["message"] and same["field"] == "to"
    assert _error(engine.migrate(to="Bad Name"), 422)
    assert engine.host_of() == "h1"
    assert not engine.agents.asked("h1", "POST", "/v1/domains/web/migrate")


def test_a_full_target_is_refused_with_the_schedulers_reason(engine: Engine) -> None:
    with engine.ctx.db.session() as s:
        h2 = s.query(Host).filter_by(name="h2").one()
        h2.facts = {**h2.facts, "memory_mib": 256}
    error = _error(engine.migrate(to="h2"), 409)
    assert error["code"] == "insufficient_resources"
    assert error["message"] == ("host h2 cannot take VM web: memory: needs 512 MiB, 256 MiB "
                                "free of 256 MiB x1.0")
    # Without --to the scheduler finds no other host either (h3 is in maintenance).
    error = _error(engine.migrate(), 409)
    assert "no other host can take web" in error["message"]
    assert engine.host_of() == "h1"


def test_a_root_disk_on_the_hosts_own_storage_needs_a_copy(engine: Engine) -> None:
    error = _error(engine.migrate("local", to="h2"), 409)
    assert error["message"] == ("VM local's root disk is on host h1's own storage: moving it "
                                "needs a storage copy (--copy-storage, copy_storage: true)")
    assert engine.host_of("local") == "h1"


def test_a_storage_copy_makes_the_disk_there_first_and_drops_the_sources(
        engine: Engine) -> None:
    done = engine.finish(engine.migrate("local", to="h2", copy_storage=True))
    assert done["status"] == "success", done
    assert engine.host_of("local") == "h2"
    sent = engine.agents.bodies["migrate"]
    assert sent["copy_storage"] and sent["copy_disks"] == ["vda"]
    seen = engine.agents.seen
    job_at = seen.index(("h1", "POST", "/v1/domains/local/migrate"))
    assert seen.index(("h2", "PUT", "/v1/disks/local")) < job_at
    assert seen.index(("h1", "DELETE", "/v1/disks/local")) > job_at
    assert not engine.agents.asked("h2", "DELETE", "/v1/disks/")


def test_a_failed_storage_copy_removes_the_targets_disk_only(engine: Engine) -> None:
    engine.agents.fail_job = True
    done = engine.finish(engine.migrate("local", to="h2", copy_storage=True))
    assert done["status"] == "failure"
    assert engine.host_of("local") == "h1"
    assert engine.agents.asked("h2", "DELETE", "/v1/disks/local")
    assert not engine.agents.asked("h1", "DELETE", "/v1/disks/")


def test_a_user_may_not_migrate_an_operator_may(engine: Engine) -> None:
    user = client_as(engine.ctx, "user")
    refused = _error(user.post("/api/v1/vms/web/migrate", json={"to": "h2"}), 403)
    assert "vm.migrate" in refused["message"]
    operator = client_as(engine.ctx, "operator")
    assert operator.post("/api/v1/vms/idle/migrate", json={"to": "h2"}).status_code == 409


def test_the_operation_runs_the_agents_job_and_moves_the_vm(engine: Engine) -> None:
    done = engine.finish(engine.migrate(to="h2", max_downtime_ms=200, bandwidth_mib_s=50))
    assert done["status"] == "success", done
    assert done["message"] == ("migrated from h1 to h2: downtime 42 ms, total 3.1 s, "
                               "encrypted (TLS)")
    assert engine.host_of() == "h2"
    assert engine.client.get("/api/v1/vms/web").json()["host"] == "h2"
    sent = engine.agents.bodies["migrate"]
    # libvirtd to libvirtd over TLS, QEMU's stream too (the defaults), to the agent's address
    assert sent["destination"] == "qemu+tls://127.0.0.2/system"
    assert sent["migrate_uri"] == "tcp://127.0.0.2"
    assert sent["tls"] and sent["tls_hostname"] == "h2"  # the name its certificate carries
    assert sent["converge_timeout_s"] == 600
    assert sent["max_downtime_ms"] == 200 and sent["bandwidth_mib_s"] == 50
    assert sent["live"] and sent["persist"] and sent["auto_converge"]
    assert sent["shared_storage"] and not sent["copy_storage"]
    assert "<name>web</name>" in sent["dest_xml"] and sent["persist_xml"] == sent["dest_xml"]
    # Ports on the target before the job, dropped on the source after it.
    seen = engine.agents.seen
    job_at = seen.index(("h1", "POST", "/v1/domains/web/migrate"))
    put_h2 = [i for i, (h, m, p) in enumerate(seen)
              if h == "h2" and m == "PUT" and p.startswith("/v1/ports/")]
    assert put_h2 and put_h2[0] < job_at
    assert [i for i, (h, m, p) in enumerate(seen)
            if h == "h1" and m == "DELETE" and p.startswith("/v1/ports/") and i > job_at]
    events = [e for e in engine.ctx.bus.recent if e.type == "vm"
              and e.data.get("event") == "migrated"]
    assert events and events[-1].data["from"] == "h1" and events[-1].data["to"] == "h2"
    assert events[-1].data["downtime_ms"] == 42


def test_without_a_target_the_scheduler_picks_another_host(engine: Engine) -> None:
    done = engine.finish(engine.migrate())
    assert done["status"] == "success", done
    assert engine.host_of() == "h2"  # h1 is its own, h3 in maintenance


def test_a_failed_job_leaves_the_vm_on_its_host_and_nothing_on_the_target(
        engine: Engine) -> None:
    engine.agents.fail_job = True
    done = engine.finish(engine.migrate(to="h2"))
    assert done["status"] == "failure"
    assert "target libvirtd went away" in done["error"]["message"]
    assert engine.host_of() == "h1"
    assert engine.agents.asked("h2", "DELETE", "/v1/ports/")  # the ports pushed there go
    assert not engine.agents.asked("h1", "DELETE", "/v1/ports/")  # the source keeps its own


def test_cancel_aborts_the_agents_job_and_the_vm_stays(engine: Engine) -> None:
    engine.agents.hold_job = True
    resp = engine.migrate(to="h2")
    assert resp.status_code == 202, resp.text
    op_id = resp.json()["id"]
    _wait_for("the job's progress", lambda: engine.client.get(
        f"/api/v1/operations/{op_id}").json()["message"] == "iteration 1: 60 MiB of 128 MiB left")
    assert engine.client.delete(f"/api/v1/operations/{op_id}").status_code == 200
    done = engine.ctx.ops.wait(op_id, timeout=30)
    assert done.status.value == "cancelled", done
    assert engine.agents.cancelled  # DELETE /v1/jobs/j1 on the source's agent
    assert engine.host_of() == "h1"
    assert engine.agents.asked("h2", "DELETE", "/v1/ports/")


def test_the_reconciler_keeps_off_a_vm_being_migrated(engine: Engine) -> None:
    with engine.ctx.db.session() as s:
        s.add(Operation(type="vm.migrate", resources={"vms": ["web"]}, params={},
                        status="running", locks=[]))
    with engine.ctx.db.session() as s:
        assert vm_migration.in_flight(s) == {"web"}


def test_a_run_that_finds_the_guest_on_the_target_records_the_move(engine: Engine) -> None:
    """An engine that restarted after the guest moved but before it recorded that: both
    hosts are asked first, and the row follows the one that runs it (no second move)."""
    engine.agents.on["web"] = "h2"
    done = engine.finish(engine.migrate(to="h2"))
    assert done["status"] == "success", done
    assert done["message"] == "migrated from h1 to h2, encrypted (TLS)"
    assert engine.host_of() == "h2"
    assert not engine.agents.asked("h1", "POST", "/v1/domains/web/migrate")


def test_explain_shows_the_choice_and_every_host_and_moves_nothing(engine: Engine) -> None:
    resp = engine.client.post("/api/v1/vms/web/migrate", params={"explain": True}, json={})
    assert resp.status_code == 200, resp.text
    placed = resp.json()
    assert placed["chosen"] == "h2" and placed["current"] == "h1"
    judged = {h["host"]: h for h in placed["hosts"]}
    assert set(judged) == {"h2", "h3"}  # the VM's own host is never a candidate
    assert judged["h2"]["eligible"] and not judged["h3"]["eligible"]
    assert any("maintenance" in line for line in placed["text"])
    with engine.ctx.db.session() as s:
        h2 = s.query(Host).filter_by(name="h2").one()
        h2.facts = {**h2.facts, "memory_mib": 256}
    full = engine.client.post("/api/v1/vms/web/migrate", params={"explain": True},
                              json={"to": "h2"}).json()
    assert full["chosen"] is None
    assert any("memory: needs 512 MiB" in line for line in full["text"])
    assert engine.host_of() == "h1" and not engine.agents.seen
    with engine.ctx.db.session() as s:
        assert not s.query(Operation).count()


def test_a_migration_under_way_takes_its_room_on_the_target(engine: Engine) -> None:
    engine.agents.hold_job = True
    with engine.ctx.db.session() as s:
        h2 = s.query(Host).filter_by(name="h2").one()
        h2.facts = {**h2.facts, "memory_mib": 800}  # room for one 512 MiB VM, not two
        web = s.query(Vm).filter_by(name="web").one()
        s.add(Vm(name="api", image_id=web.image_id, host_id=web.host_id, cpus=1,
                 memory_mib=512, disk_bytes=64 << 20, state="running",
                 desired_power="running", root_pool_id=web.root_pool_id))
    first = engine.migrate(to="h2")
    assert first.status_code == 202, first.text
    error = _error(engine.migrate("api", to="h2"), 409)
    assert error["code"] == "insufficient_resources"
    assert "host h2 cannot take VM api: memory: needs 512 MiB, 288 MiB free" in error["message"]
    # A new VM is judged with the incoming one counted too: h2 is not its choice.
    placed = engine.client.get("/api/v1/vms/api/placement").json()
    assert {h["host"]: h["eligible"] for h in placed["hosts"]}["h2"] is False
    assert engine.client.delete(f"/api/v1/operations/{first.json()['id']}").status_code == 200
    assert engine.ctx.ops.wait(first.json()["id"], timeout=30).status.value == "cancelled"
    assert engine.migrate("api", to="h2").status_code == 202  # the room is free again


def _facts_with(engine: Engine, host: str, *addresses: str) -> None:
    with engine.ctx.db.session() as s:
        row = s.query(Host).filter_by(name=host).one()
        row.facts = {**row.facts, "addresses": [
            {"interface": f"eth{i}", "address": a, "prefix": 24}
            for i, a in enumerate(addresses)]}


def test_the_stream_goes_to_the_targets_address_in_the_migration_network(
        engine: Engine) -> None:
    _facts_with(engine, "h2", "127.0.0.2", "10.30.0.12", "fd30::12")
    cluster_settings.set_value(engine.ctx, "migration.network", "10.30.0.0/24")
    done = engine.finish(engine.migrate(to="h2"))
    assert done["status"] == "success", done
    sent = engine.agents.bodies["migrate"]
    assert sent["migrate_uri"] == "tcp://10.30.0.12"
    assert sent["destination"] == "qemu+tls://127.0.0.2/system"  # libvirtd: its agent's address
    cluster_settings.set_value(engine.ctx, "migration.network", "fd30::/64")
    engine.agents.on["web"] = "h1"
    _back_to_h1(engine)
    assert engine.finish(engine.migrate(to="h2"))["status"] == "success"
    assert engine.agents.bodies["migrate"]["migrate_uri"] == "tcp://[fd30::12]"


def _back_to_h1(engine: Engine) -> None:
    with engine.ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name="web").one()
        vm.host_id = s.query(Host).filter_by(name="h1").one().id


def test_a_target_without_an_address_in_the_migration_network_is_refused(
        engine: Engine) -> None:
    _facts_with(engine, "h2", "127.0.0.2", "10.30.0.12")
    cluster_settings.set_value(engine.ctx, "migration.network", "10.40.0.0/24")
    for body in ({"to": "h2"}, {}):  # named, or the scheduler's choice
        error = _error(engine.migrate(**body), 409)
        assert error["message"].startswith("host h2 has no address in the migration network "
                                           "10.40.0.0/24"), error
    assert engine.host_of() == "h1" and not engine.agents.seen
    with engine.ctx.db.session() as s:
        assert not s.query(Operation).count()


def test_with_tls_off_the_stream_is_plain_and_the_operation_says_so(engine: Engine) -> None:
    cluster_settings.set_value(engine.ctx, "migration.tls", "off")
    cluster_settings.set_value(engine.ctx, "migration.converge_s", "2m")
    done = engine.finish(engine.migrate(to="h2"))
    assert done["status"] == "success", done
    assert done["message"].endswith(", not encrypted (migration.tls is off)")
    sent = engine.agents.bodies["migrate"]
    assert not sent["tls"] and sent["tls_hostname"] is None
    assert sent["destination"] == "qemu+tls://127.0.0.2/system"  # libvirtd's link stays TLS
    assert sent["converge_timeout_s"] == 120
    events = [e for e in engine.ctx.bus.recent if e.data.get("event") == "migrated"]
    assert events[-1].data["tls"] is False
