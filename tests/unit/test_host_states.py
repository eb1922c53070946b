"""Host states: the transition table, its compare-and-swap, `host maintenance`/`activate`
through the API (operations under ``host:NAME``) and the reconciler, which must leave a host
in maintenance there whether its agent reports or not. Agents are stand-ins
(``httpx.MockTransport``); time is a clock the test steps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.agent_api.reports import HostReport, domains_digest
from corral.api import HostState
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host
from corral.engine.reconciler import Reconciler
from corral.engine.services import host_states
from corral.engine.services.host_states import TRANSITIONS, HostAction
from corral.errors import WrongState

TIMEOUT_S = 5.0

# -- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(HostState))
@pytest.mark.parametrize("action", list(HostAction))
def test_every_pair_is_a_move_or_a_409_naming_the_state_and_what_is_allowed(
        state: HostState, action: HostAction) -> None:
    if (state, action) in TRANSITIONS:
        assert host_states.target("h1", state, action) is TRANSITIONS[state, action]
        return
    with pytest.raises(WrongState) as err:
        host_states.target("h1", state, action)
    assert f"host h1 is {state}" in err.value.message
    assert err.value.details["allowed"] == [s.value for s in host_states.allowed_from(action)]
    assert err.value.status == 409


def test_the_engine_never_moves_a_host_out_of_maintenance() -> None:
    for action in (HostAction.ANSWERED, HostAction.LOST):
        assert TRANSITIONS[HostState.MAINTENANCE, action] is HostState.MAINTENANCE
    assert host_states.allowed_from(HostAction.ACTIVATE) == [HostState.MAINTENANCE]


# -- engine fixtures -----------------------------------------------------------------------


@dataclass
class StandInAgent:
    """Serves /v1/host (facts), /v1/host/memory and /v1/domains; ``refused``: nothing answers."""

    refused: bool = False
    cpus: int = 2
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if self.refused:
            raise httpx.ConnectError("connection refused", request=req)
        self.calls.append((req.method, req.url.path))
        if req.url.path == "/v1/host":
            return httpx.Response(200, json={
                "hostname": "h1", "agent_version": "9.9", "cpus": self.cpus,
                "memory_mib": 4096, "virt_type": "qemu", "libvirt_version": "9.0.0",
                "storage_dir": "/s", "console_dir": "/c", "storage_free": 1 << 30})
        if req.url.path == "/v1/host/memory":
            return httpx.Response(200, json={"total_mib": 4096, "available_mib": 3000,
                                             "ksm": None})
        if req.url.path == "/v1/domains":
            return httpx.Response(200, json=[])
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def agent() -> StandInAgent:
    return StandInAgent()


@pytest.fixture()
def ctx(tmp_path: Path, agent: StandInAgent) -> Iterator[EngineContext]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0,
                                       heartbeat_timeout_s=TIMEOUT_S))
    ctx.agent_transport = httpx.MockTransport(agent)
    with ctx.db.session() as s:
        seed_node(s, str(tmp_path / "storage"), str(tmp_path))
    try:
        yield ctx
    finally:
        ctx.ops.shutdown()


@pytest.fixture()
def client(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)


def status(ctx: EngineContext) -> str:
    with ctx.db.session() as s:
        return s.query(Host).filter_by(name="h1").one().status


def set_status(ctx: EngineContext, value: str) -> None:
    with ctx.db.session() as s:
        s.query(Host).filter_by(name="h1").one().status = value


def finished(client: TestClient, resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    op: dict[str, Any] = client.get(f"/api/v1/operations/{resp.json()['id']}/wait",
                                    params={"timeout": 30}).json()
    return op


# -- compare-and-swap --------------------------------------------------------------------


def test_a_state_changed_behind_a_stale_read_is_decided_again(ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name="h1").one()
        assert host.status == "up"  # this session now holds a stale "up"
        with ctx.db.session() as other:  # an admin's maintenance commits in between
            other.query(Host).filter_by(name="h1").one().status = "maintenance"
        before, after = host_states.apply(s, host.id, HostAction.LOST)
    # The claim on "up" lost; decided again from maintenance, which a lost agent keeps.
    assert (before, after) == (HostState.MAINTENANCE, HostState.MAINTENANCE)
    assert status(ctx) == "maintenance"


# -- maintenance and activate through the API ----------------------------------------------


def test_maintenance_then_activate(client: TestClient, ctx: EngineContext,
                                   agent: StandInAgent) -> None:
    op = finished(client, client.post("/api/v1/hosts/h1/maintenance"))
    assert op["status"] == "success" and op["type"] == "host.maintenance", op
    assert "no new VMs" in op["message"]
    assert client.get("/api/v1/hosts").json()[0]["status"] == "maintenance"
    events = [e.data for e in ctx.bus.recent if e.type == "host"]
    assert events[-1]["status"] == "maintenance"

    again = client.post("/api/v1/hosts/h1/maintenance")
    assert again.status_code == 409
    err = again.json()["error"]
    assert err["code"] == "wrong_state" and "host h1 is maintenance" in err["message"]

    agent.cpus = 4  # upgraded while in maintenance: activate reads the facts anew
    op = finished(client, client.post("/api/v1/hosts/h1/activate"))
    assert op["status"] == "success", op
    shown = client.get("/api/v1/hosts/h1").json()
    assert shown["status"] == "up" and shown["cpus"] == 4
    assert ("GET", "/v1/host") in agent.calls


def test_activate_is_refused_for_a_host_that_is_not_in_maintenance(
        client: TestClient, agent: StandInAgent) -> None:
    resp = client.post("/api/v1/hosts/h1/activate")
    assert resp.status_code == 409
    assert "host h1 is up: cannot activate it (allowed from: maintenance)" in \
        resp.json()["error"]["message"]
    assert agent.calls == []


def test_activate_with_an_agent_that_does_not_answer_stays_in_maintenance(
        client: TestClient, ctx: EngineContext, agent: StandInAgent) -> None:
    set_status(ctx, "maintenance")
    agent.refused = True
    op = finished(client, client.post("/api/v1/hosts/h1/activate"))
    assert op["status"] == "failure", op
    assert status(ctx) == "maintenance"


def test_unknown_hosts_are_404s(client: TestClient) -> None:
    for action in ("maintenance", "activate"):
        resp = client.post(f"/api/v1/hosts/nope/{action}")
        assert resp.status_code == 404 and "host nope not found" in resp.text


# -- the reconciler ------------------------------------------------------------------------


def host_id(ctx: EngineContext) -> str:
    with ctx.db.session() as s:
        return s.query(Host).filter_by(name="h1").one().id


def beat(rec: Reconciler, ctx: EngineContext) -> str:
    """One heartbeat of h1's agent; the state the engine answers it with."""
    answer = rec.report(host_id(ctx), HostReport(
        boot_id="b1", seq=1, interval_s=1, digest=domains_digest([]), domains=0,
        load_1m=0, memory_available_mib=1000))
    return answer.status


def test_a_host_in_maintenance_stays_there_whether_its_agent_reports_or_not(
        ctx: EngineContext) -> None:
    clock = Clock()
    rec = Reconciler(ctx, clock=clock)
    set_status(ctx, "maintenance")
    assert beat(rec, ctx) == "maintenance"
    assert status(ctx) == "maintenance"
    clock.now += 10 * TIMEOUT_S  # then silent for far longer than the timeout
    rec.check_heartbeats()
    assert status(ctx) == "maintenance"
    assert [e for e in ctx.bus.recent if e.type == "host"] == []


def test_a_silent_host_goes_unresponsive_then_up_through_the_table(
        ctx: EngineContext) -> None:
    clock = Clock()
    rec = Reconciler(ctx, clock=clock)
    beat(rec, ctx)
    clock.now += TIMEOUT_S
    rec.check_heartbeats()
    assert status(ctx) == "unresponsive"
    assert beat(rec, ctx) == "up"
    moves = [e.data["status"] for e in ctx.bus.recent if e.type == "host"]
    assert moves == ["unresponsive", "up"]


def test_down_comes_back_up_when_its_agent_reports(ctx: EngineContext) -> None:
    set_status(ctx, "down")
    assert beat(Reconciler(ctx, clock=Clock()), ctx) == "up"
