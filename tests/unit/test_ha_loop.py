"""The engine's HA loop (engine/ha_loop.py) with stand-in agents, a clock of the test's
own, and fence devices of the test's own: a lost host with HA VMs is fenced first, its HA
VMs then run on other hosts in priority order (room respected, the rest waiting with the
reason), none run elsewhere while the host is not confirmed off (no fence method, a failing
one), a host in maintenance or without HA VMs is never fenced, and a host that comes back
loses its stale copies before it counts as up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from corral.agent_api.reports import HostReport, LeaseState, Membership
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Operation, StoragePool, Vm
from corral.engine.ha_loop import HaLoop
from corral.engine.reconciler import HaHeard, Reconciler
from corral.engine.services import cluster_settings
from corral.engine.services.auth import create_token

ADDRESS = {"127.0.0.1": "h1", "127.0.0.2": "h2", "127.0.0.3": "h3"}


def _missing(what: str) -> httpx.Response:
    return httpx.Response(404, json={"error": {"code": "not_found", "message": what}})


@dataclass
class Agents:
    """Stand-in agents: (host, VM) → domain state; hosts in ``off`` answer nothing."""

    domains: dict[tuple[str, str], str] = field(default_factory=dict)
    vm_ids: dict[str, str] = field(default_factory=dict)
    off: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def running_on(self, vm: str) -> list[str]:
        return sorted(h for (h, v), st in self.domains.items() if v == vm and st == "running")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = ADDRESS[request.url.host]
        if host in self.off:
            raise httpx.ConnectError("no route to host", request=request)
        path, method = request.url.path, request.method
        parts = path.split("/")
        vm = parts[3] if len(parts) > 3 and parts[2] in ("domains", "seeds") else ""
        key = (host, vm)
        with self.lock:
            if path == "/v1/domains" and method == "GET":
                return httpx.Response(200, json=[
                    {"name": v, "uuid": "u", "state": st, "vm_id": self.vm_ids.get(v)}
                    for (h, v), st in self.domains.items() if h == host])
            if parts[2:3] == ["domains"] and len(parts) == 4:
                if method == "GET":
                    if key not in self.domains:
                        return _missing(f"no domain {vm}")
                    return httpx.Response(200, json={"name": vm, "uuid": "u",
                                                     "state": self.domains[key]})
                if method == "PUT":
                    self.domains.setdefault(key, "stopped")
                    return httpx.Response(200, json={"name": vm, "uuid": "u",
                                                     "state": self.domains[key]})
                return httpx.Response(200, json={"deleted": self.domains.pop(key, None)
                                                 is not None})
            if parts[2:3] == ["domains"] and len(parts) == 5:
                if key not in self.domains:
                    return _missing(f"no domain {vm}")
                self.domains[key] = "running" if parts[4] == "start" else "stopped"
                return httpx.Response(200, json={"name": vm, "uuid": "u",
                                                 "state": self.domains[key]})
        if path == "/v1/images/tiny/files":
            return httpx.Response(200, json={"files": [{"kind": "qcow2", "size": 1 << 20}]})
        if path.startswith("/v1/ports/") and method == "PUT":
            return httpx.Response(200, json={"tap": parts[-1], "id": 1})
        if method == "DELETE":
            return httpx.Response(200, json={"deleted": True})
        return _missing(path)


@dataclass
class Fences:
    """Fence devices of the test's: a host in ``devices`` can be fenced; its run powers it
    off (the stand-in agent stops answering, its QEMUs die) unless it is in ``failing``."""

    agents: Agents
    ids: dict[str, str]  # host id → name
    devices: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    runs: list[str] = field(default_factory=list)

    def configured(self, host_id: str) -> bool:
        return self.ids[host_id] in self.devices

    def fence_off(self, host_id: str) -> tuple[bool, str]:
        name = self.ids[host_id]
        self.runs.append(name)
        if name in self.failing:
            return False, "#1 fence_test: connection timed out"
        with self.agents.lock:
            self.agents.off.add(name)
            for key in [k for k in self.agents.domains if k[0] == name]:
                self.agents.domains[key] = "stopped"  # power off: its QEMUs are gone
        return True, "#1 fence_test: off, status says off"


@dataclass
class World:
    ctx: EngineContext
    client: TestClient
    agents: Agents
    fences: Fences
    loop: HaLoop
    heard: dict[str, float]
    now: list[float]
    ids: dict[str, str]
    reports: dict[str, HaHeard] = field(default_factory=dict)  # host id → its last, for HA

    def add_vm(self, name: str, host: str, ha: bool = True, priority: int = 0,
               memory_mib: int = 512) -> None:
        with self.ctx.db.session() as s:
            vm = Vm(name=name, image_id=s.query(Image).one().id,
                    host_id=s.query(Host).filter_by(name=host).one().id, cpus=1,
                    memory_mib=memory_mib, disk_bytes=64 << 20, state="running",
                    desired_power="running", root_pool_id=s.query(StoragePool).one().id,
                    ha=ha, ha_priority=priority)
            s.add(vm)
            s.flush()
            self.agents.vm_ids[name] = vm.id
        self.agents.domains[(host, name)] = "running"

    def advance(self, seconds: float, silent: tuple[str, ...] = ()) -> None:
        """Time passes; every host but ``silent`` ones (and powered-off ones) reports."""
        self.now[0] += seconds
        for host_id, name in self.ids.items():
            if name not in silent and name not in self.agents.off:
                self.heard[host_id] = self.now[0]

    def quorum(self, members: tuple[str, ...], silent: tuple[str, ...] = (),
               armed: bool = True) -> None:
        """Every host but ``silent`` ones reports a quorate membership of ``members`` and an
        armed (or not) lease, now."""
        for host_id, name in self.ids.items():
            if name not in silent:
                self.reports[host_id] = HaHeard(
                    self.now[0], Membership(quorate=True, members=list(members)),
                    LeaseState(armed=armed, left_s=10.0))

    def round(self) -> Any:
        d = self.loop.run_round()
        for _ in range(200):  # the fence threads of this round (bounded: 10 s)
            if not any(t.name.startswith("fence-") for t in threading.enumerate()):
                break
            time.sleep(0.05)
        return d

    def lose(self, host: str, settle: bool = True) -> None:
        """Power ``host`` off and run the rounds past detection: it is fenced, then its HA
        VMs are recovered (and, with ``settle``, their recoveries ended)."""
        self.agents.off.add(host)
        self.advance(4.0)
        self.round()
        self.advance(0.25)
        self.round()
        if settle:
            self.settle()

    def settle(self) -> None:
        """Every recovery submitted so far has ended."""
        for op_id, in self._ops():
            self.ctx.ops.wait(op_id, timeout=30)

    def _ops(self) -> list[tuple[str]]:
        with self.ctx.db.session() as s:
            return [(o.id,) for o in s.query(Operation).filter_by(type="vm.recover")]

    def recoveries(self) -> list[str]:
        with self.ctx.db.session() as s:
            rows = s.query(Operation).filter_by(type="vm.recover").order_by(
                Operation.created_at).all()
            return [r.resources["vms"][0] for r in rows]

    def host_of(self, vm: str) -> str:
        with self.ctx.db.session() as s:
            row = s.query(Vm).filter_by(name=vm).one()
            host = s.get(Host, row.host_id)
            assert host is not None
            return host.name

    def vm_state(self, vm: str) -> str:
        with self.ctx.db.session() as s:
            return str(s.query(Vm).filter_by(name=vm).one().state)

    def status(self, host: str) -> str:
        with self.ctx.db.session() as s:
            return str(s.query(Host).filter_by(name=host).one().status)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """h1, h2, h3 up with room for 4 VMs of 512 MiB each; a shared pool."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    agents = Agents()
    ctx.agent_transport = httpx.MockTransport(agents)
    facts = {"cpus": 4, "memory_mib": 2048, "virt_type": "qemu",
             "storage_dir": str(tmp_path), "console_dir": str(tmp_path)}
    with ctx.db.session() as s:
        for i in (1, 2, 3):
            s.add(Host(name=f"h{i}", url=f"https://127.0.0.{i}:8444", status="up",
                       facts=facts))
        s.add_all([
            Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=1 << 20),
            Network(name="default", bridge="corral0", subnet="10.210.0.0/24",
                    gateway="10.210.0.1", dhcp_start="10.210.0.128", dhcp_end="10.210.0.254"),
            StoragePool(name="shared", type="shared", path=str(tmp_path / "pool"),
                        status="ready")])
    with ctx.db.session() as s:
        ids = {h.id: h.name for h in s.query(Host)}
    now = [1000.0]
    heard = {host_id: now[0] for host_id in ids}
    fences = Fences(agents, ids)
    reports: dict[str, HaHeard] = {}
    loop = HaLoop(ctx, lambda host_id: heard[host_id], lambda: now[0], fences,
                  heard=reports.get)
    app = create_app(ctx)
    app.state.ha = loop  # `GET /api/v1/ha` reads this loop (not started: rounds by hand)
    token = create_token(ctx, "admin")
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    try:
        yield World(ctx, client, agents, fences, loop, heard, now, ids, reports)
    finally:
        ctx.ops.shutdown()


def _vm_status(world: World) -> dict[str, dict[str, Any]]:
    resp = world.client.get("/api/v1/ha")
    assert resp.status_code == 200, resp.text
    return {v["name"]: v for v in resp.json()["vms"]}


def test_a_powered_off_host_is_fenced_then_its_ha_vms_run_elsewhere_by_priority(
        world: World) -> None:
    world.fences.devices |= {"h1", "h2", "h3"}
    world.add_vm("low", "h1", priority=1)
    world.add_vm("high", "h1", priority=100)
    world.add_vm("plain", "h1", ha=False)
    world.agents.off.add("h1")  # power lost: it stops reporting
    world.advance(2.0)
    assert world.round().fence == []  # 2 s of silence: not lost yet (ha.detect_s 3 s)
    world.advance(1.5)
    d = world.round()
    assert d.fence == ["h1"] and d.recover == []  # fenced before anything moves
    assert world.fences.runs == ["h1"]
    assert world.status("h1") == "down"
    assert world.vm_state("plain") == "stopped"  # its power is off: so are its VMs
    world.advance(0.25)
    d = world.round()
    assert d.recover == ["high", "low"]
    world.settle()
    assert world.recoveries() == ["high", "low"]
    for vm in ("high", "low"):
        assert world.host_of(vm) in ("h2", "h3")
        assert world.agents.running_on(vm) == [world.host_of(vm)]
        assert world.vm_state(vm) == "running"
    assert world.host_of("plain") == "h1"  # not HA: it stays, stopped
    world.advance(0.25)
    world.round()
    assert world.recoveries() == ["high", "low"]  # nothing twice
    assert all(v["waiting"] is None for v in _vm_status(world).values())


def test_without_a_fence_method_nothing_runs_elsewhere_and_status_says_why(
        world: World) -> None:
    world.add_vm("web", "h1")
    world.advance(5.0, silent=("h1",))
    d = world.round()
    assert d.fence == [] and d.recover == []
    assert world.status("h1") == "unresponsive"
    world.advance(60.0, silent=("h1",))
    world.round()
    assert world.recoveries() == []
    why = _vm_status(world)["web"]["waiting"]
    assert "no fence method" in why and "corral host fence set h1" in why
    hosts = {h["name"]: h for h in world.client.get("/api/v1/ha").json()["hosts"]}
    assert hosts["h1"]["state"].startswith("lost") and hosts["h2"]["state"] == "up"


def test_a_failing_fence_keeps_the_vms_down_until_a_later_run_confirms(world: World) -> None:
    world.fences.devices.add("h1")
    world.fences.failing.add("h1")
    world.add_vm("web", "h1")
    world.advance(4.0, silent=("h1",))
    world.round()
    world.advance(0.5, silent=("h1",))
    world.round()
    assert world.fences.runs == ["h1"] and world.recoveries() == []
    assert "connection timed out" in _vm_status(world)["web"]["waiting"]
    world.advance(2.0, silent=("h1",))
    world.round()
    assert world.fences.runs == ["h1"]  # retried only after ha.fence_retry_s (5 s)
    world.fences.failing.clear()
    world.advance(4.0, silent=("h1",))
    world.round()
    assert world.fences.runs == ["h1", "h1"]
    world.advance(0.25, silent=("h1",))
    world.round()
    world.settle()
    assert world.agents.running_on("web") == [world.host_of("web")] != ["h1"]


def test_vms_that_find_no_room_wait_and_the_highest_priority_goes_first(
        world: World) -> None:
    world.fences.devices.add("h1")
    with world.ctx.db.session() as s:  # h3 is in maintenance: h2 alone takes VMs
        s.query(Host).filter_by(name="h3").one().status = "maintenance"
    world.add_vm("big-low", "h1", priority=1, memory_mib=1536)
    world.add_vm("big-high", "h1", priority=5, memory_mib=1536)
    world.lose("h1")
    assert world.recoveries() == ["big-high"]
    assert world.host_of("big-high") == "h2"
    assert "no host with room" in _vm_status(world)["big-low"]["waiting"]
    with world.ctx.db.session() as s:  # room appears: h3 back from maintenance
        s.query(Host).filter_by(name="h3").one().status = "up"
    world.advance(0.25)
    world.round()
    world.settle()
    assert world.host_of("big-low") == "h3"


def test_hosts_in_maintenance_or_without_ha_vms_are_never_fenced(world: World) -> None:
    world.fences.devices |= {"h1", "h2"}
    world.add_vm("plain", "h1", ha=False)
    world.add_vm("web", "h2")
    with world.ctx.db.session() as s:
        s.query(Host).filter_by(name="h2").one().status = "maintenance"
    world.advance(30.0, silent=("h1", "h2"))
    world.round()
    assert world.fences.runs == [] and world.recoveries() == []


def test_a_setting_changes_the_detection_time(world: World) -> None:
    world.fences.devices.add("h1")
    world.add_vm("web", "h1")
    cluster_settings.set_value(world.ctx, "ha.detect_s", "10s")
    world.advance(5.0, silent=("h1",))
    assert world.round().fence == []
    world.advance(5.0, silent=("h1",))
    assert world.round().fence == ["h1"]


def test_a_host_that_comes_back_loses_its_stale_copy_before_it_is_up(world: World) -> None:
    world.fences.devices.add("h1")
    world.add_vm("web", "h1")
    world.lose("h1")
    moved_to = world.host_of("web")
    assert moved_to != "h1" and world.status("h1") == "down"
    # h1 powers on: its libvirt still has the domain (defined, not running)
    world.agents.off.discard("h1")
    assert ("h1", "web") in world.agents.domains
    rec = Reconciler(world.ctx)
    with world.ctx.db.session() as s:
        h1 = s.query(Host).filter_by(name="h1").one().id
    answer = rec.report(h1, HostReport(boot_id="b2", seq=0, interval_s=1, digest="",
                                       domains=1, load_1m=0, memory_available_mib=1024))
    assert answer.status == "up"
    assert ("h1", "web") not in world.agents.domains  # gone before h1 was up
    assert world.agents.running_on("web") == [moved_to]
    assert rec.clear_moved(h1) == []  # nothing left


def test_a_host_whose_stale_copies_cannot_be_removed_stays_out_of_use(world: World) -> None:
    world.fences.devices.add("h1")
    world.add_vm("web", "h1")
    world.lose("h1")
    rec = Reconciler(world.ctx)
    with world.ctx.db.session() as s:
        h1 = s.query(Host).filter_by(name="h1").one().id
    # its agent reports, but its calls fail (libvirtd not up yet): it stays down
    answer = rec.report(h1, HostReport(boot_id="b2", seq=0, interval_s=1, digest="",
                                       domains=1, load_1m=0, memory_available_mib=1024))
    assert answer.status == "down" and world.status("h1") == "down"


def test_an_ha_vm_left_on_a_fenced_host_that_comes_back_starts_there(world: World) -> None:
    world.fences.devices.add("h1")
    with world.ctx.db.session() as s:  # no other host takes VMs
        for name in ("h2", "h3"):
            s.query(Host).filter_by(name=name).one().status = "maintenance"
    world.add_vm("web", "h1")
    world.add_vm("off", "h1")
    with world.ctx.db.session() as s:  # a user stopped it: it stays stopped
        s.query(Vm).filter_by(name="off").one().desired_power = "stopped"
    world.lose("h1", settle=False)
    assert world.recoveries() == [] and world.vm_state("web") == "stopped"
    assert "no host with room" in _vm_status(world)["web"]["waiting"]
    world.agents.off.discard("h1")  # powered on again: its agent reports, it is up
    with world.ctx.db.session() as s:
        s.query(Host).filter_by(name="h1").one().status = "up"
    world.advance(1.0)
    world.round()
    with world.ctx.db.session() as s:
        starts = [o.id for o in s.query(Operation).filter_by(type="vm.start")]
    assert len(starts) == 1
    world.ctx.ops.wait(starts[0], timeout=30)
    assert world.agents.running_on("web") == ["h1"] and world.vm_state("web") == "running"
    assert world.agents.running_on("off") == []


# -- the lease path: quorum from the hosts' own reports, no fence device ---------------------

def test_a_host_out_of_quorum_with_an_armed_lease_loses_its_vms_once_it_lapsed(
        world: World) -> None:
    """No fence method anywhere: h1 is cut off; h2 and h3 report a quorate membership
    without it. Its VMs wait for the lease (10 s) + margin (2 s) from when the engine first
    saw it out (later than its last report), then run elsewhere; h1 is `down` (a host coming
    back then loses its stale copies)."""
    world.add_vm("web", "h1")
    world.quorum(("h1", "h2", "h3"))
    world.round()
    world.advance(1.0, silent=("h1",))
    world.quorum(("h2", "h3"), silent=("h1",))
    world.advance(3.0, silent=("h1",))
    world.quorum(("h2", "h3"), silent=("h1",))
    d = world.round()
    assert d.lost == ["h1"] and d.recover == [] and d.fence == []
    assert "out of quorum: its lease lapses in" in d.waiting["web"]
    hosts = {h["name"]: h for h in world.client.get("/api/v1/ha").json()["hosts"]}
    assert hosts["h1"]["quorum"] == "out" and hosts["h2"]["quorum"] == "in"
    assert hosts["h2"]["lease"].startswith("armed")
    for _ in range(11):  # seen out at 1004: to 1015, still waiting
        world.advance(1.0, silent=("h1",))
        world.quorum(("h2", "h3"), silent=("h1",))
        assert world.round().recover == []
    world.advance(1.5, silent=("h1",))
    world.quorum(("h2", "h3"), silent=("h1",))
    d = world.round()
    assert d.recover == ["web"] and "lease lapsed" in d.safe["h1"]
    world.settle()
    assert world.host_of("web") in ("h2", "h3")
    assert world.status("h1") == "down"


def test_a_silent_host_still_in_the_quorate_membership_keeps_its_vms(world: World) -> None:
    """Its agent is cut off from the engine only (or restarting): its peers still see it.
    Even with a fence method, it is neither fenced nor robbed of its VMs."""
    world.fences.devices |= {"h1", "h2", "h3"}
    world.add_vm("web", "h1")
    for _ in range(30):
        world.advance(1.0, silent=("h1",))
        world.quorum(("h1", "h2", "h3"), silent=("h1",))
        d = world.round()
        assert d.fence == [] and d.recover == []
    assert "still in the quorate membership" in d.waiting["web"]
    assert world.fences.runs == [] and world.host_of("web") == "h1"


def test_a_lease_not_reported_armed_is_not_trusted(world: World) -> None:
    """Out of quorum, but its last report said its lease was not armed (no guard, or armed
    too late): only a fence device could free its VMs; there is none, so they wait."""
    world.add_vm("web", "h1")
    world.quorum(("h1", "h2", "h3"), armed=False)
    world.advance(1.0, silent=("h1",))
    for _ in range(30):
        world.quorum(("h2", "h3"), silent=("h1",))
        world.advance(1.0, silent=("h1",))
        d = world.round()
        assert d.recover == []
    assert "held no armed lease" in d.waiting["web"]


def test_the_answer_to_a_report_arms_the_lease_only_for_a_host_with_ha_vms(
        world: World) -> None:
    world.add_vm("web", "h1")
    world.add_vm("plain", "h2", ha=False)
    rec = Reconciler(world.ctx, clock=lambda: world.now[0])
    ids = {name: host_id for host_id, name in world.ids.items()}
    report = HostReport(boot_id="b", seq=0, interval_s=1.0, digest="", domains=0, load_1m=0,
                        memory_available_mib=1000)
    one = rec.report(ids["h1"], report)
    two = rec.report(ids["h2"], report)
    assert (one.arm_lease, one.lease_s) == (True, 10.0)
    assert (two.arm_lease, two.lease_s) == (False, 10.0)
