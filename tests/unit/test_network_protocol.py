"""The network protocol, both ends: the engine's typed calls (corral.engine.agent_calls.networks)
against the agent's own routes (corral.agent.network_routes, nic_routes' reservations) in
process, with the host's network code faked; and hosts called at once by ``networks.create``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_transport import in_process, noting_json
from engine_seed import seed_node
from fastapi import FastAPI

from corral.agent import network, network_routes, nic_routes
from corral.agent.network import dnsmasq
from corral.agent_api import Deleted, Ok
from corral.agent_api.networks import Lease, NetworkSpec, NetworkStatus, ReservationEntry, ReservationsSet
from corral.api import NetworkCreate
from corral.engine.agent_client import AgentClient
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Network
from corral.engine.services import networks
from corral.errors import Conflict

SPEC = NetworkSpec(name="web", bridge="cr-web", subnet="10.210.7.0/24", gateway="10.210.7.1",
                   dhcp_start="10.210.7.128", dhcp_end="10.210.7.254", dns_domain="corral",
                   mode="nat", vni=42, local="192.0.2.1", peers=("192.0.2.2",), serve=False)
LEASE = Lease(mac="52:54:00:00:00:01", ip="10.210.7.130", hostname="a", expires=0)


class FakeHost:
    """The host's network code, as the agent's routes call it: records each spec."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built: list[NetworkSpec] = []
        self.checked: list[NetworkSpec] = []
        self.deleted: list[str] = []
        self.reserved: list[tuple[str, str, str]] = []
        monkeypatch.setattr(network, "ensure_network", lambda s, _d: self.built.append(s))
        monkeypatch.setattr(network, "check_network", lambda s: self.checked.append(s))
        monkeypatch.setattr(network, "delete_network",
                            lambda s, _d, keep_bridge: self.deleted.append(s.name))
        monkeypatch.setattr(network, "network_status",
                            lambda s, _d: {"bridge": True, "overlay": True})
        monkeypatch.setattr(network, "leases", lambda s, _d: [LEASE])
        monkeypatch.setattr(dnsmasq, "set_reservations", self._reserve)

    def _reserve(self, _spec: NetworkSpec, _dir: Path, entries: list[tuple[str, str, str]]
                 ) -> bool:
        self.reserved.extend(entries)
        return True


@pytest.fixture()
def wired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[AgentClient, FakeHost, list[tuple[str, str, Any]]]]:
    host = FakeHost(monkeypatch)
    nets = network_routes.Networks(tmp_path)
    app = FastAPI()
    app.include_router(network_routes.router(nets))
    app.include_router(nic_routes.router(None, nets.spec, tmp_path))  # type: ignore[arg-type]
    sent: list[tuple[str, str, Any]] = []
    client = AgentClient("http://agent", reconnect_s=0, transport=in_process(app, noting_json(sent)))
    yield client, host, sent
    client.close()


def test_a_spec_round_trips_through_the_agent(
        wired: tuple[AgentClient, FakeHost, list[tuple[str, str, Any]]]) -> None:
    client, host, sent = wired
    assert client.check_network("web", SPEC.body()) == Ok()
    status = client.ensure_network("web", SPEC.body())
    assert status == NetworkStatus(bridge=True, overlay=True)
    assert host.checked == host.built == [SPEC]  # every field made it, the name from the path
    assert sent[1][2] == json.loads(SPEC.body().model_dump_json())  # peers: a JSON list
    assert client.network_status("web") == status
    assert client.network_leases("web") == [LEASE]
    entries = [ReservationEntry(mac=LEASE.mac, ip="10.210.7.20", name="a")]
    assert client.set_reservations("web", entries) == ReservationsSet(changed=True)
    assert host.reserved == [(LEASE.mac, "10.210.7.20", "a")]
    assert client.delete_network("web") == Deleted(deleted=True)
    assert client.delete_network("web") == Deleted(deleted=False)  # idempotent
    assert host.deleted == ["web"]


# -- hosts at once ---------------------------------------------------------------------------

@pytest.fixture()
def two_hosts(tmp_path: Path) -> Iterator[EngineContext]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        seed_node(s, str(tmp_path), str(tmp_path))
        s.add(Host(name="h2", url="http://127.0.0.2:9", status="up", facts={}))
    yield ctx
    ctx.ops.shutdown()


def test_create_asks_every_host_at_once(two_hosts: EngineContext) -> None:
    ctx = two_hosts
    # Each kind of call waits for the other host's: serial calls would break the barrier.
    barriers = {"POST": threading.Barrier(2, timeout=5), "PUT": threading.Barrier(2, timeout=5)}
    hosts: dict[str, set[str]] = {"POST": set(), "PUT": set()}

    def handle(request: httpx.Request) -> httpx.Response:
        hosts[request.method].add(request.url.host)
        barriers[request.method].wait()
        return httpx.Response(200, json={"ok": True} if request.method == "POST"
                              else {"bridge": True})

    ctx.agent_transport = httpx.MockTransport(handle)
    op = networks.create(ctx, NetworkCreate(name="web"))
    assert ctx.ops.wait(op.id, timeout=20).status == "success"
    assert hosts == {"POST": {"127.0.0.1", "127.0.0.2"}, "PUT": {"127.0.0.1", "127.0.0.2"}}
    with ctx.db.session() as s:
        assert s.query(Network).filter_by(name="web").one().status == "ready"


def test_the_first_refusing_host_is_the_answer(two_hosts: EngineContext) -> None:
    ctx = two_hosts

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.2":
            return httpx.Response(409, json={"error": {"code": "conflict", "field": "subnet",
                                                       "message": "overlaps a route on h2"}})
        return httpx.Response(200, json={"ok": True})

    ctx.agent_transport = httpx.MockTransport(handle)
    with pytest.raises(Conflict, match="overlaps a route on h2"):
        networks.create(ctx, NetworkCreate(name="web"))
    with ctx.db.session() as s:
        assert s.query(Network).filter_by(name="web").count() == 0
