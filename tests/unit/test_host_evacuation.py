"""Evacuation of a host (`POST /api/v1/hosts/{name}/maintenance`, ``?explain=true`` its
dry run) with stand-in agents of four hosts: the plan (targets by the
scheduler, moves counted against each other, anti-affinity kept), a refusal before
anything moves that names each VM and why, --force, the evacuation modes (live, offline for
stopped VMs, stop, auto's stop-move-start), the bound on moves at once, cancel and a
failure part-way (the host up again, what moved stays moved), and `vm set --evacuation`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, StoragePool, Vm, VmGroup
from corral.engine.services import cluster_settings
from corral.engine.services.auth import create_token

ADDRESS = {"127.0.0.1": "h1", "127.0.0.2": "h2", "127.0.0.3": "h3", "127.0.0.4": "h4"}


def _missing(what: str) -> httpx.Response:
    return httpx.Response(404, json={"error": {"code": "not_found", "message": what}})


@dataclass
class Agents:
    """Stand-in agents: which domain each host has and in what state; migration jobs that
    end once ``together`` of them ran at the same time (or after a while), or never
    (``hold``: until cancelled), or fail (``fail``)."""

    domains: dict[tuple[str, str], str] = field(default_factory=dict)  # (host, vm) -> state
    hold: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    together: int = 1
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)  # migration jobs under way
    most_at_once: int = 0
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def where(self, vm: str) -> list[str]:
        return sorted(h for h, v in self.domains if v == vm)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = ADDRESS[request.url.host]
        path, method = request.url.path, request.method
        with self.lock:
            self.seen.append((host, method, path))
        parts = path.split("/")  # "", "v1", "domains", NAME, ...
        vm = parts[3] if len(parts) > 3 and parts[2] in ("domains", "vms", "disks", "seeds") \
            else ""
        key = (host, vm)
        if parts[2:3] == ["domains"] and len(parts) == 4:
            if method == "GET":
                if key not in self.domains:
                    return _missing(f"no domain {vm}")
                return httpx.Response(200, json={"name": vm, "uuid": "u",
                                                 "state": self.domains[key]})
            if method == "PUT":  # define
                self.domains.setdefault(key, "stopped")
                return httpx.Response(200, json={"name": vm, "uuid": "u",
                                                 "state": self.domains[key]})
            return httpx.Response(200, json={"deleted": self.domains.pop(key, None)
                                             is not None})
        if parts[2:3] == ["domains"] and len(parts) == 5:
            action = parts[4]
            if action == "migrate":
                return self._migrate(host, vm, json.loads(request.content))
            if action == "snapshots":
                return httpx.Response(200, json=[])
            if key not in self.domains:
                return _missing(f"no domain {vm}")
            if action in ("shutdown", "destroy"):
                self.domains[key] = "stopped"
            elif action == "start":
                self.domains[key] = "running"
            return httpx.Response(200, json={"name": vm, "uuid": "u",
                                             "state": self.domains[key]})
        if parts[2:3] == ["jobs"]:
            return self._job(parts[3], method)
        if path.startswith("/v1/vms/") and path.endswith("/files"):
            return httpx.Response(200, json={"files": []})
        if path == "/v1/images/tiny/files":
            return httpx.Response(200, json={"files": [{"kind": "qcow2", "size": 1 << 20}]})
        if path.startswith("/v1/ports/") and method == "PUT":
            return httpx.Response(200, json={"tap": parts[-1], "id": 1})
        if path.startswith("/v1/networks/") and path.endswith("/leases"):
            return httpx.Response(200, json=[])
        if method == "PUT" and parts[2:3] == ["disks"]:
            return httpx.Response(200, json={"path": f"/s/vms/{vm}.qcow2", "created": True})
        if method == "DELETE":
            return httpx.Response(200, json={"deleted": True})
        return _missing(path)

    def _migrate(self, host: str, vm: str, body: dict[str, Any]) -> httpx.Response:
        target = ADDRESS[body["destination"].split("//")[1].split("/")[0]]
        with self.lock:
            job = {"id": f"j-{vm}", "vm": vm, "source": host, "target": target, "polls": 0,
                   "cancelled": False, "tls": body["tls"]}
            self.jobs[job["id"]] = job
            self.running.add(vm)
            self.most_at_once = max(self.most_at_once, len(self.running))
        return httpx.Response(200, json=_job(job, "running"))

    def _job(self, job_id: str, method: str) -> httpx.Response:
        job = self.jobs[job_id]
        if method == "DELETE":
            job["cancelled"] = True
            return httpx.Response(200, json=_job(job, "running"))
        time.sleep(0.05)  # a long poll that answers soon
        with self.lock:
            job["polls"] += 1
            vm = job["vm"]
            if job["cancelled"]:
                self.running.discard(vm)
                return httpx.Response(200, json=_job(job, "failure", error={
                    "code": "conflict", "message": f"vm.migrate domain:{vm} was cancelled"}))
            if vm in self.hold or (len(self.running) < self.together and job["polls"] < 60):
                return httpx.Response(200, json=_job(job, "running", progress=40))
            self.running.discard(vm)
            if vm in self.fail:
                return httpx.Response(200, json=_job(job, "failure", error={
                    "code": "hypervisor_error", "message": "target libvirtd went away"}))
            self.domains.pop((job["source"], vm), None)
            self.domains[(job["target"], vm)] = "running"
        return httpx.Response(200, json=_job(job, "success", result={
            "destination": "d", "downtime_ms": 40, "total_ms": 900, "memory_bytes": 1 << 27,
            "iterations": 2, "tls": job["tls"]}))


def _job(job: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    return {"id": job["id"], "kind": "vm.migrate", "key": f"domain:{job['vm']}",
            "status": status, "progress": 100 if status == "success" else 0,
            "version": job["polls"], **fields}


@dataclass
class Engine:
    ctx: EngineContext
    client: TestClient
    agents: Agents

    def add_vm(self, name: str, host: str, state: str = "running", memory_mib: int = 512,
               group: str | None = None, evacuation: str = "auto") -> None:
        with self.ctx.db.session() as s:
            host_row = s.query(Host).filter_by(name=host).one()
            group_row = s.query(VmGroup).filter_by(name=group).one() if group else None
            s.add(Vm(name=name, image_id=s.query(Image).one().id, host_id=host_row.id,
                     cpus=1, memory_mib=memory_mib, disk_bytes=64 << 20, state=state,
                     desired_power=state, evacuation=evacuation,
                     root_pool_id=s.query(StoragePool).one().id,
                     group_id=group_row.id if group_row else None))
        self.agents.domains[(host, name)] = state

    def host_of(self, vm: str) -> str:
        with self.ctx.db.session() as s:
            row = s.query(Vm).filter_by(name=vm).one()
            host = s.get(Host, row.host_id)
            assert host is not None
            return host.name

    def status(self, host: str = "h1") -> str:
        with self.ctx.db.session() as s:
            return s.query(Host).filter_by(name=host).one().status

    def maintenance(self, **body: Any) -> httpx.Response:
        resp: httpx.Response = self.client.post("/api/v1/hosts/h1/maintenance", json=body)
        return resp

    def finish(self, resp: httpx.Response) -> dict[str, Any]:
        assert resp.status_code == 202, resp.text
        assert resp.json()["type"] == "host.maintenance"
        return self.ctx.ops.wait(resp.json()["id"], timeout=60).model_dump(mode="json")

    def plan(self) -> dict[str, Any]:
        resp = self.client.post("/api/v1/hosts/h1/maintenance", params={"explain": True})
        assert resp.status_code == 200, resp.text
        out: dict[str, Any] = resp.json()
        return out

    def jobs_cancelled(self) -> list[str]:
        return sorted(j["vm"] for j in self.agents.jobs.values() if j["cancelled"])

    def migrations(self) -> list[str]:
        return [p.split("/")[3] for h, m, p in self.agents.seen
                if m == "POST" and p.endswith("/migrate")]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """h1 (the one evacuated) and h2 with room for 4 VMs of 512 MiB, h3 for 2, h4 in
    maintenance; a shared pool every VM's root disk is on."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    agents = Agents()
    ctx.agent_transport = httpx.MockTransport(agents)
    facts = {"cpus": 4, "memory_mib": 2048, "virt_type": "qemu",
             "storage_dir": str(tmp_path), "console_dir": str(tmp_path)}
    with ctx.db.session() as s:
        for i, status in ((1, "up"), (2, "up"), (3, "up"), (4, "maintenance")):
            memory = 1024 if i == 3 else 2048
            s.add(Host(name=f"h{i}", url=f"https://127.0.0.{i}:8444", status=status,
                       facts={**facts, "memory_mib": memory}))
        s.add_all([
            Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=1 << 20),
            Network(name="default", bridge="corral0", subnet="10.210.0.0/24",
                    gateway="10.210.0.1", dhcp_start="10.210.0.128", dhcp_end="10.210.0.254"),
            StoragePool(name="shared", type="shared", path=str(tmp_path / "pool"),
                        status="ready"),
            VmGroup(name="apart", policy="anti-affinity", strict=True)])
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


def _wait_for(what: str, check: Any) -> None:
    for _ in range(400):  # 20 s at most
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- the plan ------------------------------------------------------------------------------


def test_the_plan_counts_earlier_moves_and_keeps_anti_affinity(engine: Engine) -> None:
    """Spread would send every VM to h2 (the most free); a member of `apart` is on h2, so
    its partner goes to h3; the moves planned before count: h2 takes 3, not 4."""
    engine.add_vm("a", "h1", group="apart")
    engine.add_vm("b", "h2", group="apart")
    for name in ("c", "d", "e"):
        engine.add_vm(name, "h1")
    plan = engine.plan()
    targets = {st["vm"]: st["target"] for st in plan["steps"]}
    assert targets["a"] == "h3"
    assert sorted(targets.values()) == ["h2", "h2", "h3", "h3"]
    assert [st["action"] for st in plan["steps"]] == ["live"] * 4
    assert plan["blocked"] == []
    assert "a (running, evacuation auto): live migration to h3" in plan["text"]
    assert engine.migrations() == [] and engine.status() == "up"


def test_a_vm_that_cannot_move_refuses_the_maintenance_before_anything_moves(
        engine: Engine) -> None:
    engine.add_vm("small", "h1")
    engine.add_vm("huge", "h1", memory_mib=3000)  # no other host has the room
    engine.add_vm("strict", "h1", evacuation="migrate")
    with engine.ctx.db.session() as s:  # a setting pending: the live move is refused
        row = s.query(Vm).filter_by(name="strict").one()
        row.booted = {"cpus": 1, "memory_mib": 256, "balloon_mib": 256}
    plan = engine.plan()
    assert plan["blocked"] == ["huge", "strict"]
    error = _error(engine.maintenance(), 409)
    assert error["message"].startswith("host h1 stays up: 2 VM(s) cannot move off it (huge: "
                                       "no other host can take huge")
    assert "strict: VM strict has settings that apply at its next start" in error["message"]
    assert "--force" in error["message"]
    assert set(error["details"]["vms"]) == {"huge", "strict"}
    assert engine.status() == "up" and engine.migrations() == []


def test_force_leaves_what_cannot_move_and_stops_the_stop_mode(engine: Engine) -> None:
    engine.add_vm("web", "h1")
    engine.add_vm("huge", "h1", memory_mib=3000)
    engine.add_vm("cache", "h1", evacuation="stop")
    done = engine.finish(engine.maintenance(force=True))
    assert done["status"] == "success", done
    assert engine.status() == "maintenance"
    assert engine.host_of("web") in ("h2", "h3") and engine.agents.where("web") != ["h1"]
    assert engine.host_of("huge") == "h1" and engine.host_of("cache") == "h1"
    assert engine.agents.domains[("h1", "cache")] == "stopped"
    assert engine.agents.domains[("h1", "huge")] == "running"
    message = done["message"]
    assert message.startswith("host h1 is in maintenance: it takes no new VMs")
    assert "1 stopped there (cache)" in message and "1 left on it (huge: " in message


# -- the moves -----------------------------------------------------------------------------


def test_every_vm_moves_and_the_host_ends_in_maintenance(engine: Engine) -> None:
    engine.add_vm("a", "h1", group="apart")
    engine.add_vm("b", "h2", group="apart")
    engine.add_vm("c", "h1")
    engine.add_vm("d", "h1")
    engine.add_vm("idle", "h1", state="stopped")  # its definition moves offline
    done = engine.finish(engine.maintenance())
    assert done["status"] == "success", done
    assert engine.status() == "maintenance"
    with engine.ctx.db.session() as s:
        h1 = s.query(Host).filter_by(name="h1").one()
        assert s.query(Vm).filter_by(host_id=h1.id).count() == 0
    assert engine.host_of("a") == "h3"  # never with b
    for vm in ("a", "c", "d"):
        assert engine.agents.where(vm) == [engine.host_of(vm)]
        assert engine.agents.domains[(engine.host_of(vm), vm)] == "running"
    assert engine.agents.where("idle") == [engine.host_of("idle")] != ["h1"]
    assert sorted(engine.migrations()) == ["a", "c", "d"]  # idle was not migrated live
    assert "4 moved (" in done["message"]
    said = [e.data.get("message") for e in engine.ctx.bus.recent
            if e.type == "operation" and e.data.get("id") == done["id"]]
    assert any(m and m.startswith("1/4 moved: ") and " → " in m for m in said), said
    # A new VM goes elsewhere meanwhile and after: the host is out of the scheduler.
    placed = engine.client.post("/api/v1/vms", params={"explain": True},
                                json={"name": "new", "image": "tiny", "memory": "64M"})
    assert placed.status_code == 200 and placed.json()["chosen"] != "h1"


def test_auto_moves_a_vm_that_cannot_go_live_by_stop_move_start(engine: Engine) -> None:
    engine.add_vm("pending", "h1")
    with engine.ctx.db.session() as s:  # booted with less: a setting waits for a start
        row = s.query(Vm).filter_by(name="pending").one()
        row.booted = {"cpus": 1, "memory_mib": 256, "balloon_mib": 256}
    step = engine.plan()["steps"][0]
    assert step["action"] == "cold" and "next start" in step["reason"]
    done = engine.finish(engine.maintenance())
    assert done["status"] == "success", done
    target = engine.host_of("pending")
    assert target != "h1" and engine.agents.where("pending") == [target]
    assert engine.agents.domains[(target, "pending")] == "running"
    assert engine.migrations() == []  # never live


def test_no_more_moves_at_once_than_migration_parallel(engine: Engine) -> None:
    cluster_settings.set_value(engine.ctx, "migration.parallel", 2)
    engine.agents.together = 2  # a job ends only once another runs beside it (or late)
    for i in range(5):
        engine.add_vm(f"v{i}", "h1", memory_mib=256)
    done = engine.finish(engine.maintenance())
    assert done["status"] == "success", done
    assert engine.agents.most_at_once == 2
    assert sorted(engine.migrations()) == [f"v{i}" for i in range(5)]


def test_a_failed_move_stops_the_evacuation_and_the_host_is_up_again(
        engine: Engine) -> None:
    cluster_settings.set_value(engine.ctx, "migration.parallel", 1)
    for name in ("a", "b", "c"):
        engine.add_vm(name, "h1", memory_mib=256)
    engine.agents.fail.add("b")
    done = engine.finish(engine.maintenance())
    assert done["status"] == "failure", done
    message = done["error"]["message"]
    assert "b: target libvirtd went away" in message
    assert "moved: a → h" in message and "not moved: c" in message
    assert message.endswith("host h1 is up again")
    assert engine.status() == "up"
    assert engine.host_of("a") != "h1" and engine.host_of("b") == "h1"
    assert engine.host_of("c") == "h1" and "c" not in engine.migrations()


def test_cancel_stops_the_moves_in_flight_and_the_host_is_up_again(engine: Engine) -> None:
    cluster_settings.set_value(engine.ctx, "migration.parallel", 1)
    engine.add_vm("a", "h1")
    engine.add_vm("b", "h1")
    engine.agents.hold.add("b")
    resp = engine.maintenance()
    assert resp.status_code == 202 and resp.json()["may_cancel"] is True
    op_id = resp.json()["id"]
    _wait_for("b's migration", lambda: "b" in engine.agents.running)
    assert engine.client.delete(f"/api/v1/operations/{op_id}").status_code == 200
    done = engine.ctx.ops.wait(op_id, timeout=30)
    assert done.status.value == "cancelled", done
    assert done.message is not None and "moved: a → " in done.message
    assert engine.jobs_cancelled() == ["b"]
    assert engine.status() == "up"
    assert engine.host_of("a") != "h1" and engine.host_of("b") == "h1"
    assert engine.agents.domains[("h1", "b")] == "running"


# -- the evacuation mode of a VM ------------------------------------------------------------


def test_the_evacuation_mode_is_set_shown_and_checked(engine: Engine) -> None:
    engine.add_vm("web", "h1", state="stopped")
    assert engine.client.get("/api/v1/vms/web").json()["evacuation"] == "auto"
    resp = engine.client.patch("/api/v1/vms/web", json={"evacuation": "stop"})
    assert resp.status_code == 202, resp.text
    assert engine.ctx.ops.wait(resp.json()["id"], timeout=30).status.value == "success"
    assert engine.client.get("/api/v1/vms/web").json()["evacuation"] == "stop"
    assert engine.plan()["steps"][0]["action"] == "stay"
    bad = _error(engine.client.patch("/api/v1/vms/web", json={"evacuation": "away"}), 422)
    assert "evacuation" in json.dumps(bad)


def test_a_lost_host_with_vms_needs_force_and_keeps_them(engine: Engine) -> None:
    engine.add_vm("web", "h1")
    with engine.ctx.db.session() as s:
        s.query(Host).filter_by(name="h1").one().status = "unresponsive"
    error = _error(engine.maintenance(), 409)
    assert "web: its host is unresponsive: its agent must answer" in error["message"]
    assert engine.status() == "unresponsive"
    done = engine.finish(engine.maintenance(force=True))
    assert done["status"] == "success", done
    assert engine.status() == "maintenance" and engine.host_of("web") == "h1"
    assert "1 left on it (web: its host is unresponsive" in done["message"]
    assert engine.migrations() == []


def test_auto_does_not_stop_a_vm_whose_disk_no_move_carries(engine: Engine) -> None:
    """A root disk in a dir pool of the host: no other host reaches the pool and no move
    copies it, so auto refuses rather than stop the VM for nothing."""
    engine.add_vm("pinned", "h1")
    with engine.ctx.db.session() as s:
        h1 = s.query(Host).filter_by(name="h1").one()
        pool = StoragePool(name="fast", type="dir", path="/srv/fast", status="ready",
                           host_id=h1.id)
        s.add(pool)
        s.flush()
        s.query(Vm).filter_by(name="pinned").one().root_pool_id = pool.id
    step = engine.plan()["steps"][0]
    assert step["action"] == "blocked", step
    assert "no other host can take pinned" in step["reason"]
    assert "refused by pool on 3" in step["reason"]
    assert engine.agents.seen == []
