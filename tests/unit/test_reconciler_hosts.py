"""The reconciler against a fake agent at our own seam (an ``httpx.MockTransport`` that
serves the agent's /v1/domains routes): only the agent staying unreachable for the grace
(two polls at least) makes a host ``unresponsive``; an error it answered with, or one slow
answer, never does. Time is a clock the test steps, never a sleep."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import seed_node

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Vm
from corral.engine.reconciler import Reconciler

GRACE_S = 30.0


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeAgent:
    """What the agent does with the next requests: ``ok`` (serve ``domains``), ``500``,
    ``refused``, or ``slow`` (the clock moves on by ``slow_s``, then the read times out)."""

    clock: Clock
    mode: str = "ok"
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    slow_s: float = 0.0

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer x"
        if self.mode == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "slow":
            self.clock.now += self.slow_s
            raise httpx.ReadTimeout("timed out", request=request)
        if self.mode == "500":
            return httpx.Response(500, json={"error": {"code": "internal", "message": "bug"}})
        path = request.url.path
        if request.method == "GET" and path == "/v1/domains":
            return httpx.Response(200, json=list(self.domains.values()))
        name = path.removeprefix("/v1/domains/")
        if request.method == "GET" and name in self.domains:
            return httpx.Response(200, json=self.domains[name])
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


@dataclass
class Engine:
    ctx: EngineContext
    agent: FakeAgent
    clock: Clock
    reconciler: Reconciler
    host_id: str
    vm_id: str

    def poll(self, after_s: float = 0.0) -> None:
        self.clock.now += after_s
        self.reconciler.run_once()

    def host_status(self) -> str:
        with self.ctx.db.session() as s:
            host = s.get(Host, self.host_id)
            assert host is not None
            return host.status

    def host_events(self) -> list[dict[str, Any]]:
        return [e.data for e in self.ctx.bus.recent if e.type == "host"]

    def vm(self) -> tuple[str, str]:
        with self.ctx.db.session() as s:
            vm = s.get(Vm, self.vm_id)
            assert vm is not None
            return vm.state, vm.desired_power


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0,
                                       host_grace_s=GRACE_S))
    clock = Clock()
    agent = FakeAgent(clock)
    ctx.agent_transport = httpx.MockTransport(agent.handle)
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        image = s.query(Image).filter_by(name="tiny").one()
        vm = Vm(name="vm1", image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
                disk_bytes=64 << 20, state="running",
                desired_power="running")
        s.add(vm)
        s.flush()
        host_id, vm_id = host.id, vm.id
    agent.domains["vm1"] = {"name": "vm1", "uuid": "u1", "vm_id": vm_id, "state": "running"}
    yield Engine(ctx, agent, clock, Reconciler(ctx, clock=clock), host_id, vm_id)
    ctx.ops.shutdown()


def _set_host_status(e: Engine, status: str) -> None:
    with e.ctx.db.session() as s:
        host = s.get(Host, e.host_id)
        assert host is not None
        host.status = status


@pytest.mark.parametrize("status", ["up", "unresponsive"])
def test_an_answered_500_leaves_the_host_as_it_is(engine: Engine, status: str) -> None:
    _set_host_status(engine, status)
    engine.agent.mode = "500"
    for _ in range(5):
        engine.poll(after_s=GRACE_S)
    assert engine.host_status() == status
    assert engine.host_events() == []


def test_one_slow_answer_leaves_the_host_up(engine: Engine) -> None:
    engine.agent.mode, engine.agent.slow_s = "slow", 2 * GRACE_S  # longer than the grace
    engine.poll()
    assert engine.host_status() == "up"
    engine.agent.mode = "ok"
    engine.poll(after_s=2)
    assert engine.host_status() == "up"
    assert engine.host_events() == []


def test_unreachable_past_the_grace_is_unresponsive_then_up_again(engine: Engine) -> None:
    engine.agent.mode = "refused"
    for _ in range(3):  # misses at 0, 10 and 20 s: inside the grace
        engine.poll(after_s=10)
        assert engine.host_status() == "up"
    engine.poll(after_s=10)  # 30 s since the first unanswered poll
    assert engine.host_status() == "unresponsive"
    engine.poll(after_s=10)
    [down] = engine.host_events()  # published once, with why
    assert down["status"] == "unresponsive"
    assert "no answer for 30 s (4 polls)" in down["reason"]
    assert "unreachable" in down["reason"]

    engine.agent.mode = "ok"
    engine.poll(after_s=10)
    assert engine.host_status() == "up"
    assert [e["status"] for e in engine.host_events()] == ["unresponsive", "up"]
    assert engine.host_events()[-1]["reason"]


def test_an_answer_resets_the_misses(engine: Engine) -> None:
    for mode in ["refused", "refused", "ok", "refused"]:  # never two misses in a row
        engine.agent.mode = mode
        engine.poll(after_s=GRACE_S)
    assert engine.host_status() == "up"
    engine.poll(after_s=GRACE_S)  # the second miss in a row, a grace after the first
    assert engine.host_status() == "unresponsive"


def test_one_miss_is_never_enough_whatever_the_grace(engine: Engine) -> None:
    engine.ctx.settings.host_grace_s = 0
    engine.agent.mode = "refused"
    engine.poll()
    assert engine.host_status() == "up"
    engine.poll()
    assert engine.host_status() == "unresponsive"


def test_timeouts_past_the_grace_are_unresponsive(engine: Engine) -> None:
    engine.agent.mode, engine.agent.slow_s = "slow", 10  # each poll gives up after 10 s
    engine.poll()
    engine.poll(after_s=2)
    assert engine.host_status() == "up"  # 22 s since the first poll was sent
    engine.poll(after_s=2)
    assert engine.host_status() == "unresponsive"
    assert "did not answer" in engine.host_events()[-1]["reason"]


def test_a_reported_state_change_is_recorded(engine: Engine) -> None:
    engine.agent.domains["vm1"]["state"] = "paused"
    engine.poll()
    assert engine.vm() == ("paused", "running")
    assert {"name": "vm1", "state": "paused"} in [
        e.data for e in engine.ctx.bus.recent if e.type == "vm"]


def test_a_guest_shutdown_is_taken_as_the_users_intent(engine: Engine) -> None:
    engine.agent.domains["vm1"]["state"] = "stopped"
    engine.poll()
    assert engine.vm() == ("stopped", "stopped")


def test_no_vm_is_touched_while_its_host_does_not_answer(engine: Engine) -> None:
    engine.agent.domains["vm1"]["state"] = "paused"
    engine.agent.mode = "500"
    engine.poll()
    assert engine.vm() == ("running", "running")
