"""Load balancing in the engine (`corral cluster policy`, /api/v1/cluster/policy), with
stand-in agents: loads from the agents' reports, one live migration off a host that stays
above the threshold (its operation says why), nothing back, nothing while the policy is
none, while its migration runs or off a host in maintenance; the policy's refusals, who
may set it, what `show` says, the CLI, and the loop started and stopped with the engine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from engine_seed import client_as
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from corral.agent_api.reports import HostReport
from corral.cli import cluster_policy as policy_cli
from corral.cli.main import app as cli_app
from corral.client import Client
from corral.engine.app import build_context, create_app
from corral.engine.balance_loop import Balancer
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Operation, StoragePool, Vm
from corral.engine.reconciler import Reconciler
from corral.engine.services import cluster_settings
from corral.engine.services.auth import create_token

URL = "/api/v1/cluster/policy"
WINDOW = 60


@dataclass
class Agents:
    """Stand-in agents of h1-h3: where each domain runs; a migration job succeeds at once
    (or runs until cancelled with ``hold``)."""

    on: dict[str, str] = field(default_factory=lambda: {"web1": "h1", "web2": "h1"})
    hold: bool = False
    migrated: list[tuple[str, str]] = field(default_factory=list)  # (vm, source)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = {"127.0.0.1": "h1", "127.0.0.2": "h2", "127.0.0.3": "h3"}[request.url.host]
        path, method = request.url.path, request.method
        parts = path.split("/")
        vm = parts[3] if len(parts) > 3 and parts[2] == "domains" else ""
        if len(parts) == 4 and vm and method == "GET":
            if host != self.on.get(vm):
                return _err(404, f"no domain {vm}")
            return httpx.Response(200, json={"name": vm, "uuid": "u", "vm_id": None,
                                             "state": "running"})
        if path == f"/v1/domains/{vm}/migrate":
            if self.hold:
                return httpx.Response(200, json=_job(vm, "running"))
            self.migrated.append((vm, host))
            self.on[vm] = "h2" if host == "h1" else "h1"
            return httpx.Response(200, json=_job(vm, "success", result={
                "destination": "qemu+tcp://x/system", "downtime_ms": 40, "total_ms": 900,
                "memory_bytes": 1 << 27, "iterations": 2}))
        if path.startswith("/v1/jobs/"):
            if method == "DELETE":
                self.hold = False
            time.sleep(0.02)
            return httpx.Response(200, json=_job("web1", "running" if self.hold else
                                                 "failure", error={"code": "conflict",
                                                                   "message": "cancelled"}))
        if path == "/v1/images/tiny/files":
            return httpx.Response(200, json={"files": [{"kind": "qcow2", "size": 1 << 20}]})
        if path.startswith("/v1/ports/"):
            if method == "PUT":
                return httpx.Response(200, json={"tap": path.rsplit("/", 1)[1], "id": 1})
            return httpx.Response(200, json={"deleted": True})
        if vm and method == "DELETE":
            return httpx.Response(200, json={"deleted": False})
        return _err(404, path)


def _err(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": "not_found", "message": message}})


def _job(vm: str, status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "j1", "kind": "vm.migrate", "key": f"domain:{vm}", "status": status,
            "progress": 100 if status == "success" else 0, "version": 3, **fields}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Engine:
    ctx: EngineContext
    client: TestClient
    agents: Agents
    clock: Clock
    balancer: Balancer
    ids: dict[str, str]

    def report(self, host: str, cpu: float, vms: dict[str, float] | None = None,
               memory: float = 30.0, at: float | None = None) -> None:
        """One report of ``host`` now: its CPU %, and CPUs' worth per VM (by name)."""
        with self.ctx.db.session() as s:
            by_name = {v.name: v.id for v in s.query(Vm)}
        self.ctx.loads.record(self.ids[host], HostReport(
            boot_id="b", seq=0, interval_s=1.0, digest="", domains=0, load_1m=0.0,
            memory_available_mib=1000, cpu_percent=cpu, memory_used_percent=memory,
            vm_cpus={by_name[k]: v for k, v in (vms or {}).items()}),
            at=self.clock.now if at is None else at)

    def steady(self, seconds: int, loads: dict[str, tuple[float, dict[str, float]]]) -> None:
        """Every host reports ``loads`` each 5 s for ``seconds``; the clock moves on."""
        for _ in range(seconds // 5 + 1):
            for host, (cpu, vms) in loads.items():
                self.report(host, cpu, vms)
            self.clock.now += 5
        self.clock.now -= 5

    def host_of(self, vm: str) -> str:
        with self.ctx.db.session() as s:
            row = s.query(Vm).filter_by(name=vm).one()
            found = s.get(Host, row.host_id)
            assert found is not None
            return found.name

    def set(self, **body: Any) -> httpx.Response:
        return self.client.put(URL, json=body)

    def wait_ops(self) -> None:
        with self.ctx.db.session() as s:
            ids = [op.id for op in s.query(Operation)]
        for op_id in ids:
            self.ctx.ops.wait(op_id, timeout=30)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    clock = Clock()
    ctx.loads.clock = clock
    agents = Agents()
    ctx.agent_transport = httpx.MockTransport(agents)
    facts = {"cpus": 2, "memory_mib": 4096, "virt_type": "qemu",
             "storage_dir": str(tmp_path), "console_dir": str(tmp_path)}
    with ctx.db.session() as s:
        hosts = [Host(name=f"h{i}", url=f"https://127.0.0.{i}:8444",
                      status="maintenance" if i == 3 else "up", facts=facts)
                 for i in (1, 2, 3)]
        image = Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=1 << 20)
        net = Network(name="default", bridge="corral0", subnet="10.210.0.0/24",
                      gateway="10.210.0.1", dhcp_start="10.210.0.128", dhcp_end="10.210.0.254")
        pool = StoragePool(name="shared", type="shared", path=str(tmp_path / "pool"),
                           status="ready")
        s.add_all([*hosts, image, net, pool])
        s.flush()
        for name in ("web1", "web2"):
            s.add(Vm(name=name, image_id=image.id, host_id=hosts[0].id, cpus=1,
                     memory_mib=256, disk_bytes=64 << 20, state="running",
                     desired_power="running", root_pool_id=pool.id))
        ids = {h.name: h.id for h in hosts}
    app = create_app(ctx)
    client = TestClient(app, headers={"Authorization": f"Bearer {create_token(ctx, 'admin')}"})
    balancer: Balancer = app.state.balancer  # on ctx.loads' clock: the test's
    try:
        yield Engine(ctx, client, agents, clock, balancer, ids)
    finally:
        ctx.ops.shutdown()


BUSY = {"h1": (92.0, {"web1": 0.9, "web2": 0.95}), "h2": (2.0, {})}


def _balance(e: Engine) -> None:
    resp = e.set(mode="balance", cpu_percent="80%", window_s=f"{WINDOW}s", interval_s="5s")
    assert resp.status_code == 200, resp.text


def test_a_host_above_for_the_window_gives_one_vm_and_none_comes_back(engine: Engine) -> None:
    _balance(engine)
    engine.steady(WINDOW - 20, BUSY)
    assert engine.balancer.run_round() is not None
    assert engine.agents.migrated == []  # above, but not yet for the whole window
    engine.steady(25, BUSY)
    verdict = engine.balancer.run_round()
    assert verdict is not None and verdict.move is not None
    engine.wait_ops()
    assert engine.agents.migrated == [("web1", "h1")]  # both take off the excess: the smaller
    assert engine.host_of("web1") == "h2"
    with engine.ctx.db.session() as s:
        op = s.query(Operation).one()
        assert op.status == "success" and op.type == "vm.migrate"
        assert "(balance: h1 CPU 92% > 80% for 60 s; web1 to h2" in (op.message or "")
        assert op.params["reason"].startswith("balance: h1")
    # Each host now carries one VM, at about half: for many windows nothing moves.
    after = {"h1": (48.0, {"web2": 0.95}), "h2": (46.0, {"web1": 0.9})}
    for _ in range(6):
        engine.steady(30, after)
        engine.balancer.run_round()
    engine.wait_ops()
    assert engine.agents.migrated == [("web1", "h1")]
    shown = engine.client.get(URL).json()
    assert shown["mode"] == "balance" and shown["cpu_percent"] == 80
    assert shown["decisions"][0]["vm"] == "web1"
    assert shown["decisions"][0]["status"] == "success"
    hosts = {h["host"]: h for h in shown["hosts"]}
    assert hosts["h1"]["cpu_percent"] == 48.0 and hosts["h1"]["above"] == []
    assert hosts["h3"]["status"] == "maintenance" and hosts["h3"]["samples"] == 0


def test_a_host_that_stays_above_after_a_move_waits_a_window_again(engine: Engine) -> None:
    _balance(engine)
    engine.steady(WINDOW + 5, BUSY)
    engine.balancer.run_round()
    engine.wait_ops()
    assert len(engine.agents.migrated) == 1
    # The move's end is recent: h1 and h2 are judged on what comes after it only.
    engine.steady(10, {"h1": (95.0, {"web2": 1.9}), "h2": (3.0, {"web1": 0.9})})
    engine.balancer.run_round()
    engine.wait_ops()
    assert len(engine.agents.migrated) == 1


def test_the_policy_none_moves_nothing(engine: Engine) -> None:
    _balance(engine)
    assert engine.set(mode="none").status_code == 200
    engine.steady(WINDOW + 5, BUSY)
    assert engine.balancer.run_round() is None
    assert engine.agents.migrated == []
    assert cluster_settings.get(engine.ctx, "balance.cpu_percent") == 80  # kept for later


def test_nothing_is_decided_while_its_migration_runs(engine: Engine) -> None:
    _balance(engine)
    engine.agents.hold = True
    engine.steady(WINDOW + 5, BUSY)
    verdict = engine.balancer.run_round()
    assert verdict is not None and verdict.move is not None
    assert engine.balancer.run_round() is None  # its migration still runs
    with engine.ctx.db.session() as s:
        op_id = s.query(Operation).one().id
    engine.ctx.ops.cancel(op_id)
    engine.wait_ops()


def test_a_host_in_maintenance_gives_nothing(engine: Engine) -> None:
    _balance(engine)
    with engine.ctx.db.session() as s:
        s.query(Host).filter_by(name="h1").one().status = "maintenance"
    engine.steady(WINDOW + 5, BUSY)
    verdict = engine.balancer.run_round()
    assert verdict is not None and verdict.move is None
    assert engine.agents.migrated == []


def test_a_vm_the_scheduler_refuses_stays_and_the_decision_says_why(engine: Engine) -> None:
    _balance(engine)
    with engine.ctx.db.session() as s:  # only h1 has what they ask for
        s.query(Host).filter_by(name="h1").one().tags = ["gpu"]
        for v in s.query(Vm):
            v.host_tags = ["gpu"]
    engine.steady(WINDOW + 5, BUSY)
    verdict = engine.balancer.run_round()
    assert verdict is not None and verdict.move is None
    assert "web1 to h2: host h2 cannot take VM web1" in verdict.note
    assert "gpu" in verdict.note
    decisions = engine.client.get(URL).json()["decisions"]
    assert decisions[0]["vm"] is None and "nothing can move" in decisions[0]["reason"]
    engine.steady(10, BUSY)
    engine.balancer.run_round()  # the same again: one decision, refreshed
    assert len(engine.client.get(URL).json()["decisions"]) == 1


def test_a_vm_that_must_not_move_live_stays_and_another_goes(engine: Engine) -> None:
    _balance(engine)
    with engine.ctx.db.session() as s:
        s.query(Vm).filter_by(name="web1").one().evacuation = "stop"
    engine.steady(WINDOW + 5, BUSY)
    engine.balancer.run_round()
    engine.wait_ops()
    assert engine.agents.migrated == [("web2", "h1")]


@pytest.mark.parametrize(("body", "field_"), [
    ({"mode": "balance", "cpu_percent": "lots"}, "cpu_percent"),
    ({"mode": "balance", "cpu_percent": "180%"}, "cpu_percent"),
    ({"mode": "balance", "interval_s": "0s"}, "interval_s"),
    ({"mode": "balance", "window_s": "1 week"}, "window_s"),
    ({"mode": "sometimes"}, "mode"),
])
def test_a_bad_policy_is_a_422_naming_the_field_and_changes_nothing(
        engine: Engine, body: dict[str, Any], field_: str) -> None:
    resp = engine.set(**body)
    assert resp.status_code == 422, resp.text
    assert field_ in json.dumps(resp.json()["error"])
    assert cluster_settings.get(engine.ctx, "balance.mode") == "none"


def test_operators_read_the_policy_but_only_admins_set_it(engine: Engine) -> None:
    operator = client_as(engine.ctx, "operator")
    assert operator.get(URL).status_code == 200
    assert operator.put(URL, json={"mode": "balance"}).status_code == 403
    assert cluster_settings.get(engine.ctx, "balance.mode") == "none"


def test_reports_carry_the_load_to_the_history(engine: Engine) -> None:
    rec = Reconciler(engine.ctx)
    rec.report(engine.ids["h2"], HostReport(
        boot_id="b", seq=0, interval_s=1.0, digest="", domains=0, load_1m=0.5,
        memory_available_mib=1000, cpu_percent=37.5, memory_used_percent=61.0))
    latest = engine.ctx.loads.latest(engine.ids["h2"])
    assert latest is not None and latest.cpu_percent == 37.5
    assert latest.memory_percent == 61.0
    # An older agent measures nothing: nothing is kept, the host simply does not count.
    rec.report(engine.ids["h1"], HostReport(boot_id="b", seq=0, interval_s=1.0, digest="",
                                            domains=0, load_1m=0.5, memory_available_mib=1))
    assert engine.ctx.loads.latest(engine.ids["h1"]) is None


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "200"})


def test_the_cli_sets_and_shows_the_policy(engine: Engine,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def sdk(_data_dir: Path | None = None) -> Client:
        c = Client("http://testserver", "unused")
        c._http = TestClient(engine.client.app, headers=dict(engine.client.headers))
        return c

    monkeypatch.setattr(policy_cli, "client", sdk)
    done = _cli("cluster", "policy", "set", "balance", "--cpu", "70%", "--memory", "90%",
                "--interval", "30s", "--window", "2m")
    assert done.exit_code == 0, done.output
    assert "policy: balance: CPU 70%, memory 90%, every 30s over a 2m window" in done.output
    engine.steady(WINDOW, BUSY)
    shown = _cli("cluster", "policy", "show")
    assert shown.exit_code == 0, shown.output
    assert "h1" in shown.output and "92%" in shown.output and "no decisions yet" in shown.output
    engine.steady(2 * WINDOW, BUSY)
    engine.balancer.run_round()
    engine.wait_ops()
    with engine.ctx.db.session() as s:
        op_id = s.query(Operation).one().id
    moved = _cli("cluster", "policy", "show").output
    assert "recent decisions (newest first):" in moved
    assert "balance: h1 CPU 92% > 70% for 2 min; web1 to h2" in moved
    assert f"[operation {op_id}: success]" in moved
    bad = _cli("cluster", "policy", "set", "balance", "--cpu", "lots")
    assert bad.exit_code == 2 and "cpu_percent" in bad.output
    off = _cli("cluster", "policy", "set", "none", "-o", "json")
    assert json.loads(off.output)["mode"] == "none"


def test_the_loop_moves_a_vm_on_its_own_and_stops_cleanly(engine: Engine) -> None:
    """The balancer's own thread, on the wall clock: one move, then a clean stop."""
    _balance(engine)
    engine.set(mode="balance", interval_s="1s")
    ctx = engine.ctx
    ctx.loads.clock = time.time
    now = time.time()
    for i in range(WINDOW // 5 + 1):
        for host, (cpu, vms) in BUSY.items():
            engine.report(host, cpu, vms, at=now - WINDOW + i * 5)
    balancer = Balancer(ctx)
    balancer.start()
    try:
        for _ in range(100):  # 10 s at most
            if engine.agents.migrated:
                break
            time.sleep(0.1)
    finally:
        balancer.stop()
    assert not balancer.running
    assert engine.agents.migrated == [("web1", "h1")]
    engine.wait_ops()
