"""Restart in place (issue 15, "HA restart"): the budget on its own (corral.ha.restart_budget),
then the reconciler's resync of a host with a stand-in agent whose domains the test stops
with libvirt's reasons (crashed: QEMU killed; shutdown: the guest powered off): an HA VM is
started again where it is as its restart policy says, at most ha.restart_max times in the
window, then it stays down with the reason; a VM that is not HA is taken as stopped by its
user, as before; a stop a user asked is never undone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node

from corral.agent_api.domains import DomainInfo
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, StoragePool, Vm
from corral.engine.reconciler import Reconciler
from corral.engine.services import cluster_settings
from corral.ha.restart_budget import RestartBudget

# -- the budget ------------------------------------------------------------------------------


def test_the_budget_allows_max_restarts_in_the_window_then_refuses_with_why() -> None:
    budget = RestartBudget(max_restarts=3, window_s=600)
    history: tuple[float, ...] = ()
    for now in (1000.0, 1010.0, 1020.0):
        verdict = budget.check(history, now)
        assert verdict.allowed and verdict.reason == ""
        history = verdict.history
    assert history == (1000.0, 1010.0, 1020.0)
    refused = budget.check(history, 1030.0)
    assert not refused.allowed and refused.history == history
    assert "restarted in place 3 times" in refused.reason
    assert "`corral vm start`" in refused.reason


def test_restarts_older_than_the_window_no_longer_count() -> None:
    budget = RestartBudget(max_restarts=2, window_s=60)
    verdict = budget.check([100.0, 150.0], 161.0)  # 100 is 61 s old: out of the window
    assert verdict.allowed and verdict.history == (150.0, 161.0)


def test_a_restart_dated_in_the_future_is_dropped_and_zero_means_never() -> None:
    """The wall clock went back: a restart "after now" does not hold the VM down."""
    assert RestartBudget(max_restarts=1, window_s=60).check([500.0], 100.0).allowed
    never = RestartBudget(max_restarts=0, window_s=60).check([], 100.0)
    assert not never.allowed and "ha.restart_max 0" in never.reason


# -- the reconciler ---------------------------------------------------------------------------


@dataclass
class FakeAgent:
    """Domains by name ({name, uuid, vm_id, state, reason}); the actions asked, in order;
    ``refuse_start``: a start fails as a broken host's would."""

    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[tuple[str, str]] = field(default_factory=list)
    refuse_start: bool = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")  # v1, domains, NAME, ACTION
        if parts[:2] != ["v1", "domains"]:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "?"}})
        if len(parts) == 2:
            return httpx.Response(200, json=list(self.domains.values()))
        dom = self.domains[parts[2]]
        if request.method == "POST":
            action = parts[3]
            self.actions.append((parts[2], action))
            if action == "start" and self.refuse_start:
                return httpx.Response(502, json={"error": {
                    "code": "host_error", "message": "qemu: could not open disk"}})
            dom.update({"start": {"state": "running", "reason": ""},
                        "destroy": {"state": "stopped", "reason": "destroyed"}}[action])
        return httpx.Response(200, json=dom)

    def stop(self, name: str, reason: str, state: str = "stopped") -> None:
        self.domains[name].update(state=state, reason=reason)


@dataclass
class Engine:
    ctx: EngineContext
    agent: FakeAgent
    reconciler: Reconciler
    host_id: str

    def add(self, name: str, ha: bool = True, policy: str = "always") -> None:
        with self.ctx.db.session() as s:
            vm = Vm(name=name, image_id=s.query(Image).one().id, host_id=self.host_id,
                    root_pool_id=s.query(StoragePool).one().id, cpus=1, memory_mib=64,
                    disk_bytes=64 << 20, state="running", desired_power="running", ha=ha,
                    restart_policy=policy)
            s.add(vm)
            s.flush()
            self.agent.domains[name] = {"name": name, "uuid": name, "vm_id": vm.id,
                                        "state": "running", "reason": ""}

    def crash(self, name: str, reason: str = "crashed") -> None:
        """The domain stops (libvirt's ``reason``) and the engine resyncs the host."""
        self.agent.stop(name, reason)
        self.reconciler.resync_host(self.host_id)

    def row(self, name: str) -> tuple[str, str, str | None, int]:
        """(state, desired_power, ha_reason, restarts counted)."""
        with self.ctx.db.session() as s:
            vm = s.query(Vm).filter_by(name=name).one()
            return vm.state, vm.desired_power, vm.ha_reason, len(vm.ha_restarts)

    def starts(self, name: str) -> int:
        return self.agent.actions.count((name, "start"))

    def ha_events(self, name: str) -> list[dict[str, Any]]:
        return [e.data for e in self.ctx.bus.recent
                if e.type == "vm" and e.data.get("name") == name and "ha" in e.data]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    agent = FakeAgent()
    ctx.agent_transport = httpx.MockTransport(agent)
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        s.add(StoragePool(name="shared1", type="shared", path="/pools/shared1",
                          status="ready"))
        host_id = host.id
    try:
        yield Engine(ctx, agent, Reconciler(ctx), host_id)
    finally:
        ctx.ops.shutdown()


@pytest.mark.parametrize("reason", ["crashed", "shutdown", "destroyed", ""])
def test_policy_always_restarts_an_ha_vm_whatever_stopped_it(engine: Engine,
                                                             reason: str) -> None:
    engine.add("db")
    engine.crash("db", reason)
    assert engine.starts("db") == 1
    assert engine.agent.domains["db"]["state"] == "running"
    assert engine.row("db") == ("running", "running", None, 1)
    [event] = engine.ha_events("db")
    assert event["ha"] == "restarted" and "restarted in place (1 of 3" in event["message"]


@pytest.mark.parametrize("reason", ["crashed", "failed", "daemon", "unknown", "destroyed"])
def test_policy_on_failure_restarts_after_a_failure(engine: Engine, reason: str) -> None:
    engine.add("db", policy="on-failure")
    engine.crash("db", reason)
    assert engine.starts("db") == 1
    assert engine.row("db") == ("running", "running", None, 1)


def test_policy_on_failure_leaves_a_guest_that_powered_itself_off(engine: Engine) -> None:
    engine.add("db", policy="on-failure")
    engine.crash("db", "shutdown")
    assert engine.starts("db") == 0
    assert engine.row("db") == ("stopped", "stopped", None, 0)  # the user's intent
    [event] = engine.ha_events("db")
    assert event["ha"] == "not restarted" and "on-failure" in event["message"]


def test_a_vm_that_is_not_ha_is_taken_as_stopped_by_its_user(engine: Engine) -> None:
    engine.add("plain", ha=False)
    engine.crash("plain", "crashed")
    assert engine.starts("plain") == 0
    assert engine.row("plain") == ("stopped", "stopped", None, 0)
    assert engine.ha_events("plain") == []


def test_a_panicked_domain_is_powered_off_then_started(engine: Engine) -> None:
    engine.add("db")
    engine.agent.stop("db", "panicked", state="crashed")
    engine.reconciler.resync_host(engine.host_id)
    assert engine.agent.actions == [("db", "destroy"), ("db", "start")]
    assert engine.row("db")[:2] == ("running", "running")


def test_past_the_budget_it_stays_down_with_the_reason_until_a_user_starts_it(
        engine: Engine) -> None:
    cluster_settings.set_value(engine.ctx, "ha.restart_max", 2)
    engine.add("db")
    engine.crash("db")
    engine.crash("db")
    assert engine.starts("db") == 2
    engine.crash("db")  # the third in the window
    assert engine.starts("db") == 2
    state, desired, reason, restarts = engine.row("db")
    assert (state, desired, restarts) == ("stopped", "stopped", 2)
    assert reason is not None and "restarted in place 2 times (ha.restart_max 2" in reason
    last = engine.ha_events("db")[-1]
    assert last["ha"] == "left down" and "went down (crashed)" in last["message"]
    engine.reconciler.resync_host(engine.host_id)  # nothing restarts it behind the user
    assert engine.starts("db") == 2

    admin = admin_client(engine.ctx)
    assert admin.get("/api/v1/vms/db").json()["ha_reason"] == reason
    resp = admin.put("/api/v1/vms/db/state", json={"action": "start"})
    assert resp.status_code == 202, resp.text
    assert engine.ctx.ops.wait(resp.json()["id"], timeout=30).status.value == "success"
    assert engine.row("db") == ("running", "running", None, 0)  # a fresh budget
    engine.crash("db")
    assert engine.row("db")[:2] == ("running", "running")


def test_a_failed_restart_leaves_it_down_with_the_agents_error(engine: Engine) -> None:
    engine.add("db")
    engine.agent.refuse_start = True
    engine.crash("db")
    state, desired, reason, _ = engine.row("db")
    assert (state, desired) == ("stopped", "stopped")
    assert reason == "restart in place failed: qemu: could not open disk"


def test_a_stop_the_user_asked_meanwhile_is_not_undone(engine: Engine) -> None:
    """The host's listing said running and desired running; by the time the VM's lock is
    held a user's stop has run: the row, read again under the lock, wins."""
    engine.add("db")
    with engine.ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name="db").one()
        vm.desired_power, vm_id = "stopped", vm.id
    engine.agent.stop("db", "shutdown")
    listed = DomainInfo.model_validate(engine.agent.domains["db"])
    engine.reconciler._vm(engine.host_id, vm_id, "db", "running", "running", listed)
    assert engine.starts("db") == 0
