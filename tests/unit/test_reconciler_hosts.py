"""The reconciler against agents' reports, with a fake agent at our own seam (an
``httpx.MockTransport`` serving the agent's /v1/domains routes): only silence — no report
for the heartbeat timeout — makes a host ``unresponsive``; a report brings it back; a
report whose digest disagrees with the rows (or that carries lifecycle events, or comes
from a restarted agent) resyncs the host, and only then is the agent asked for its domains.
Time is a clock the test steps, never a sleep."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import seed_node

from corral.agent_api.reports import DomainEvent, HostReport, domains_digest
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Vm
from corral.engine.reconciler import RESYNC_AGAIN_S, Reconciler

TIMEOUT_S = 5.0


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeAgent:
    """Serves ``domains``; ``mode`` ``500`` answers every request with a bug's error."""

    mode: str = "ok"
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    asked: int = 0  # domain listings asked for

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "500":
            return httpx.Response(500, json={"error": {"code": "internal", "message": "bug"}})
        path = request.url.path
        if request.method == "GET" and path == "/v1/domains":
            self.asked += 1
            return httpx.Response(200, json=list(self.domains.values()))
        name = path.removeprefix("/v1/domains/")
        if request.method == "GET" and name in self.domains:
            return httpx.Response(200, json=self.domains[name])
        if request.method == "GET" and path == "/v1/host":
            return httpx.Response(200, json={
                "hostname": "h1", "agent_version": "0", "cpus": 2, "memory_mib": 4096,
                "virt_type": "qemu", "libvirt_version": "9.0.0", "storage_dir": "/s",
                "console_dir": "/c", "storage_free": 1 << 30})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    def report(self, boot_id: str = "boot-1", events: list[DomainEvent] | None = None,
               seq: int = 0) -> HostReport:
        digest = domains_digest((d["vm_id"], d["state"]) for d in self.domains.values())
        return HostReport(boot_id=boot_id, seq=seq, interval_s=1.0, digest=digest,
                          domains=len(self.domains), load_1m=0.1, memory_available_mib=1024,
                          events=events or [])


@dataclass
class Engine:
    ctx: EngineContext
    agent: FakeAgent
    clock: Clock
    reconciler: Reconciler
    host_id: str
    vm_id: str

    def report(self, after_s: float = 1.0, **kwargs: Any) -> str:
        """The agent reports ``after_s`` later; resyncs it asked for run at once."""
        self.clock.now += after_s
        answer = self.reconciler.report(self.host_id, self.agent.report(**kwargs))
        self.reconciler.drain()
        return answer.status

    def silence(self, for_s: float) -> None:
        self.clock.now += for_s
        self.reconciler.check_heartbeats()

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
                                       heartbeat_timeout_s=TIMEOUT_S))
    clock = Clock()
    agent = FakeAgent()
    ctx.agent_transport = httpx.MockTransport(agent.handle)
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        image = s.query(Image).filter_by(name="tiny").one()
        vm = Vm(name="vm1", image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
                disk_bytes=64 << 20, state="running", desired_power="running")
        s.add(vm)
        s.flush()
        host_id, vm_id = host.id, vm.id
    agent.domains["vm1"] = {"name": "vm1", "uuid": "u1", "vm_id": vm_id, "state": "running"}
    e = Engine(ctx, agent, clock, Reconciler(ctx, clock=clock), host_id, vm_id)
    e.report()  # the agent's first report: it started, so the engine resyncs it once
    yield e
    ctx.ops.shutdown()


def test_silence_past_the_timeout_is_unresponsive_and_a_report_brings_it_back(
        engine: Engine) -> None:
    engine.silence(TIMEOUT_S - 0.5)
    assert engine.host_status() == "up"
    engine.silence(0.5)  # TIMEOUT_S since its last report
    assert engine.host_status() == "unresponsive"
    engine.silence(10)
    [lost] = engine.host_events()  # published once, with why
    assert lost["status"] == "unresponsive"
    assert f"no heartbeat for {TIMEOUT_S:.1f} s" in lost["reason"]

    asked = engine.agent.asked
    assert engine.report() == "up"
    assert [e["status"] for e in engine.host_events()] == ["unresponsive", "up"]
    assert engine.agent.asked == asked + 1  # back from silence: caught up and resynced


def test_heartbeats_keep_a_host_up_however_long(engine: Engine) -> None:
    for _ in range(50):
        engine.report(after_s=TIMEOUT_S - 1)
        engine.silence(0)
    assert engine.host_status() == "up"
    assert engine.host_events() == []


def test_a_host_never_heard_from_counts_from_the_engines_start(engine: Engine) -> None:
    fresh = Reconciler(engine.ctx, clock=engine.clock)  # an engine that just started
    engine.clock.now += TIMEOUT_S - 1
    fresh.check_heartbeats()
    assert engine.host_status() == "up"
    engine.clock.now += 1
    fresh.check_heartbeats()
    assert engine.host_status() == "unresponsive"


def test_matching_digests_ask_the_agent_nothing(engine: Engine) -> None:
    asked = engine.agent.asked
    for _ in range(5):
        engine.report()
    assert engine.agent.asked == asked


def test_a_digest_that_disagrees_resyncs_the_host_once(engine: Engine) -> None:
    engine.agent.domains["vm1"]["state"] = "paused"  # paused behind the engine's back
    asked = engine.agent.asked
    engine.report()
    assert engine.vm() == ("paused", "running")
    assert engine.agent.asked == asked + 1
    assert {"name": "vm1", "state": "paused"} in [
        e.data for e in engine.ctx.bus.recent if e.type == "vm"]
    engine.report()  # now they agree: nothing more to ask
    assert engine.agent.asked == asked + 1


def test_a_disagreement_that_cannot_be_mended_is_not_asked_every_second(
        engine: Engine) -> None:
    engine.agent.domains["vm1"]["state"] = "paused"
    engine.agent.mode = "500"  # the resync fails: the rows stay as they are
    engine.report()
    engine.agent.mode = "ok"
    asked = engine.agent.asked
    for _ in range(5):
        engine.report()  # the same disagreement: already tried
    assert engine.agent.asked == asked
    engine.report(after_s=RESYNC_AGAIN_S)  # but tried again after a while
    assert engine.agent.asked == asked + 1
    engine.agent.domains["vm1"]["state"] = "crashed"
    engine.agent.mode = "500"
    engine.report()
    engine.agent.mode = "ok"
    engine.report(events=[DomainEvent(name="vm1", event="crashed", state="crashed")])
    assert engine.vm() == ("crashed", "running")  # an event asks again


def test_a_guest_shutdown_reported_as_an_event_is_taken_as_the_users_intent(
        engine: Engine) -> None:
    engine.agent.domains["vm1"]["state"] = "stopped"
    engine.report(events=[DomainEvent(name="vm1", vm_id=engine.vm_id, event="stopped",
                                      detail="shutdown", state="stopped")])
    assert engine.vm() == ("stopped", "stopped")
    [event] = [e.data for e in engine.ctx.bus.recent if e.type == "domain"]
    assert event == {"host": "h1", "name": "vm1", "event": "stopped", "detail": "shutdown",
                     "state": "stopped"}


def test_a_guest_seen_shutting_down_then_stopped_shut_itself_down(engine: Engine) -> None:
    engine.agent.domains["vm1"]["state"] = "shutting-down"
    engine.report(events=[DomainEvent(name="vm1", event="shutdown", state="running")])
    assert engine.vm() == ("shutting-down", "running")
    engine.agent.domains["vm1"]["state"] = "stopped"
    engine.report(events=[DomainEvent(name="vm1", event="stopped", state="stopped")])
    assert engine.vm() == ("stopped", "stopped")


def test_a_restarted_agent_is_resynced_with_fresh_facts(engine: Engine) -> None:
    asked = engine.agent.asked
    engine.report(boot_id="boot-2")
    assert engine.agent.asked == asked + 1
    with engine.ctx.db.session() as s:
        host = s.get(Host, engine.host_id)
        assert host is not None and host.facts["libvirt_version"] == "9.0.0"


def test_facts_that_could_not_be_read_are_read_at_the_next_report(engine: Engine) -> None:
    """A new agent reports before its own server listens: the engine's call back fails,
    and the next report (same boot id) tries again rather than never."""
    with engine.ctx.db.session() as s:
        host = s.get(Host, engine.host_id)
        assert host is not None
        host.facts = {}
    engine.agent.mode = "500"
    engine.report(boot_id="boot-2")
    with engine.ctx.db.session() as s:
        host = s.get(Host, engine.host_id)
        assert host is not None and "libvirt_version" not in host.facts
    engine.agent.mode = "ok"
    engine.report(boot_id="boot-2")
    with engine.ctx.db.session() as s:
        host = s.get(Host, engine.host_id)
        assert host is not None and host.facts["libvirt_version"] == "9.0.0"
    asked = engine.agent.asked
    engine.report(boot_id="boot-2")  # read once: an ordinary heartbeat asks nothing
    assert engine.agent.asked == asked


def test_a_vanished_domain_is_defined_again(engine: Engine) -> None:
    del engine.agent.domains["vm1"]
    defined: list[str] = []
    handle = engine.agent.handle

    def record(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path == "/v1/domains/vm1":
            defined.append("vm1")
            return httpx.Response(200, json={"name": "vm1", "uuid": "u1",
                                             "vm_id": engine.vm_id, "state": "stopped"})
        if request.url.path == "/v1/domains/vm1/start":
            return httpx.Response(200, json={"name": "vm1", "uuid": "u1",
                                             "vm_id": engine.vm_id, "state": "running"})
        return handle(request)

    engine.ctx.agent_transport = httpx.MockTransport(record)
    engine.ctx.forget_agent(engine.host_id)
    engine.report()
    assert defined == ["vm1"]
    assert engine.vm() == ("running", "running")
