"""The gateway, DHCP and DNS of an overlay network move off a fenced host (issue 15).

One host serves an overlay segment (``serve`` in its agent body), chosen when the network
is created (the first host by name that is up) and recorded (``networks.served_by``). It
stays while that host lives, even silent (a host only cut off may still serve: two DHCP
servers would hand out one address twice), and moves when the HA loop has fenced it: the
hosts that are up get their new bodies, exactly one of them serving; the fenced host, back,
only carries the segment. Agents are stand-ins (httpx.MockTransport) noting what they get;
the agent's own part (restore, bridge MAC) is checked on specs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.agent.network import bridge, dnsmasq, manager
from corral.agent_api.networks import NetworkSpec
from corral.agent_api.reports import HostReport
from corral.api import NetworkCreate
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, Vm
from corral.engine.ha_loop import HaLoop
from corral.engine.reconciler import Reconciler
from corral.engine.services import host_sync, networks

ADDR = {"h1": "10.220.0.1", "h2": "10.220.0.2", "h3": "10.220.0.3"}


@dataclass
class Agent:
    sent: list[tuple[str, str, Any]] = field(default_factory=list)

    def handle(self, req: httpx.Request) -> httpx.Response:
        raw = req.read()
        self.sent.append((req.method, req.url.path, json.loads(raw) if raw else None))
        what = f"{req.method} {req.url.path}"
        if what == "GET /v1/host":
            return httpx.Response(200, json={
                "hostname": "h", "agent_version": "0", "cpus": 2, "memory_mib": 4096,
                "virt_type": "qemu", "libvirt_version": "9.0.0", "storage_dir": "/s",
                "console_dir": "/c", "storage_free": 1 << 30})
        if what == "GET /v1/domains":
            return httpx.Response(200, json=[])
        if req.method == "POST" and req.url.path.endswith("/check"):
            return httpx.Response(200, json={"ok": True})
        if req.method == "PUT" and req.url.path.endswith("/reservations"):
            return httpx.Response(200, json={"changed": True})
        if req.method == "PUT" and req.url.path.startswith("/v1/networks/"):
            return httpx.Response(200, json={"bridge": True})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": what}})

    def serves(self, net: str) -> bool | None:
        """The serve flag of the last body of ``net`` it got (None: none since cleared)."""
        bodies = [b for m, p, b in self.sent if m == "PUT" and p == f"/v1/networks/{net}"]
        return bodies[-1]["serve"] if bodies else None


@dataclass
class Cluster:
    ctx: EngineContext
    agents: dict[str, Agent]
    ids: dict[str, str]

    def clear(self) -> None:
        for a in self.agents.values():
            a.sent.clear()

    def served_by(self, net: str) -> str | None:
        with self.ctx.db.session() as s:
            row = s.query(Network).filter_by(name=net).one()
            names = {h.id: h.name for h in s.query(Host)}
            return names.get(row.served_by) if row.served_by else None

    def set_status(self, host: str, status: str) -> None:
        with self.ctx.db.session() as s:
            row = s.get(Host, self.ids[host])
            assert row is not None
            row.status = status

    def create(self, name: str, vni: int) -> None:
        op = networks.create(self.ctx, NetworkCreate(name=name, vni=vni))
        assert self.ctx.ops.wait(op.id, timeout=20).status == "success"

    def fence(self, host: str) -> None:
        """What the HA loop does once a fence device confirmed ``host`` off."""
        loop = HaLoop(self.ctx, last_heard=lambda h: 0.0, clock=lambda: 0.0)
        loop._fenced(self.ids[host], host, "test: confirmed off")

    def comes_back(self, host: str) -> None:
        """Its agent's first report after a boot: the engine catches it up."""
        rec = Reconciler(self.ctx, clock=lambda: 1000.0)
        rec.report(self.ids[host], HostReport(
            boot_id="boot-2", seq=0, interval_s=1.0, digest="", domains=0, load_1m=0.0,
            memory_available_mib=1024, events=[]))
        rec.drain()


@pytest.fixture(name="c")
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    agents = {name: Agent() for name in ADDR}
    by_addr = {addr: agents[name] for name, addr in ADDR.items()}
    ctx.agent_transport = httpx.MockTransport(lambda r: by_addr[r.url.host].handle(r))
    ids: dict[str, str] = {}
    with ctx.db.session() as s:
        for name, addr in ADDR.items():
            row = Host(name=name, url=f"https://{addr}:8443", status="up", facts={})
            s.add(row)
            s.flush()
            ids[name] = row.id
    yield Cluster(ctx, agents, ids)
    ctx.ops.shutdown()


def test_the_first_host_up_by_name_serves_a_new_overlay_and_it_is_recorded(c: Cluster) -> None:
    c.set_status("h1", "down")
    c.create("ov", 42)
    assert c.served_by("ov") == "h2"
    assert [c.agents[h].serves("ov") for h in ("h1", "h2", "h3")] == [False, True, False]
    c.set_status("h1", "up")  # sticky: the first by name being up again changes nothing
    c.clear()
    c.comes_back("h1")
    assert c.served_by("ov") == "h2"
    assert [c.agents[h].serves("ov") for h in ("h1", "h2", "h3")] == [False, True, False]


def test_a_fenced_server_hands_the_segment_to_the_first_host_up(c: Cluster) -> None:
    c.create("ov", 42)
    c.create("ov2", 43)
    assert c.served_by("ov") == "h1"
    c.set_status("h1", "unresponsive")
    c.clear()
    c.fence("h1")
    assert c.served_by("ov") == c.served_by("ov2") == "h2"
    for net in ("ov", "ov2"):  # exactly one server among the bodies pushed, not the dead host
        assert [c.agents[h].serves(net) for h in ("h1", "h2", "h3")] == [None, True, False]
    assert c.agents["h1"].sent == []
    c.clear()
    c.comes_back("h1")  # powered on again: it only carries the segments now
    with c.ctx.db.session() as s:
        assert s.get(Host, c.ids["h1"]).status == "up"  # type: ignore[union-attr]
    assert c.agents["h1"].serves("ov") is False and c.agents["h1"].serves("ov2") is False
    assert c.agents["h2"].serves("ov") is True  # its peers' list names h1 again, still serving
    assert c.served_by("ov") == "h2"


def test_a_silent_server_that_was_not_fenced_keeps_serving(c: Cluster) -> None:
    c.create("ov", 42)
    c.set_status("h1", "down")  # no heartbeat, no fence: it may still run, and serve
    c.clear()
    assert host_sync.catch_up(c.ctx, c.ids["h3"]) == []
    assert c.agents["h3"].serves("ov") is False
    assert c.agents["h2"].serves("ov") is False
    assert c.served_by("ov") == "h1"


def test_a_fence_that_leaves_no_host_up_lets_the_first_one_back_serve(c: Cluster) -> None:
    c.create("ov", 42)
    for h in ("h2", "h3"):
        c.set_status(h, "down")
    c.clear()
    c.fence("h1")
    assert c.served_by("ov") is None
    assert all(a.sent == [] for a in c.agents.values())
    c.comes_back("h3")
    assert c.served_by("ov") == "h3"
    assert c.agents["h3"].serves("ov") is True


def test_a_host_back_gets_the_static_leases_it_would_need_to_serve(c: Cluster) -> None:
    c.create("ov", 42)
    with c.ctx.db.session() as s:
        net = s.query(Network).filter_by(name="ov").one()
        image = Image(name="tiny", status="ready")
        s.add(image)
        s.flush()
        vm = Vm(name="web", image_id=image.id, host_id=c.ids["h2"], cpus=1, memory_mib=64,
                disk_bytes=1, state="running", desired_power="running")
        s.add(vm)
        s.flush()
        s.add(Nic(vm_id=vm.id, network_id=net.id, mac="52:54:00:aa:bb:07", idx=0,
                  ip="10.210.0.77"))
    c.clear()
    c.comes_back("h3")  # it carries `ov`; once it serves, dnsmasq reads these at its start
    got = [b for m, p, b in c.agents["h3"].sent if m == "PUT" and p.endswith("/reservations")]
    assert got == [{"reservations": [
        {"mac": "52:54:00:aa:bb:07", "ip": "10.210.0.77", "name": "web"}]}]


def test_a_network_that_is_not_an_overlay_is_served_on_every_host(c: Cluster) -> None:
    op = networks.create(c.ctx, NetworkCreate(name="local"))
    assert c.ctx.ops.wait(op.id, timeout=20).status == "success"
    c.fence("h1")
    assert c.served_by("local") is None
    assert [c.agents[h].serves("local") for h in ("h1", "h2", "h3")] == [True, True, True]


def test_the_migration_records_the_first_host_by_name_for_overlays(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from corral.engine.db.session import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0021_fencing")
    eng = sa.create_engine(url)
    with eng.begin() as c:
        for hid, name in (("x2", "b"), ("x1", "a")):
            c.execute(sa.text("INSERT INTO hosts (id, name, url, status, facts) "
                              f"VALUES ('{hid}', '{name}', 'https://{name}', 'up', '{{}}')"))
        for nid, vni in (("n1", "7"), ("n2", "NULL")):
            c.execute(sa.text("INSERT INTO networks (id, name, bridge, vni) "
                              f"VALUES ('{nid}', '{nid}', 'br-{nid}', {vni})"))
    command.upgrade(cfg, "0022_network_server")
    with eng.begin() as c:
        got = dict(c.execute(sa.text("SELECT name, served_by FROM networks")).all())
        assert got == {"n1": "x1", "n2": None}
    command.downgrade(cfg, "0021_fencing")
    with eng.begin() as c:
        assert "served_by" not in {col["name"] for col in sa.inspect(c).get_columns("networks")}
    eng.dispose()


# -- the agent's side ---------------------------------------------------------------------

def _overlay(serve: bool = True) -> NetworkSpec:
    return NetworkSpec(name="ov", bridge="cr-ov", subnet="10.220.8.0/24", gateway="10.220.8.1",
                       dhcp_start="10.220.8.128", dhcp_end="10.220.8.254", vni=42,
                       local="10.220.0.1", peers=("10.220.0.2",), serve=serve)


def test_a_rebooted_agent_does_not_start_serving_an_overlay_on_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = _overlay()
    assert manager.restored(served, tmp_path).serve is False  # no dnsmasq: it booted
    assert manager.restored(_overlay(serve=False), tmp_path).serve is False
    plain = served.model_copy(update={"vni": None, "local": None, "peers": ()})
    assert manager.restored(plain, tmp_path) == plain  # a host-local network: always served
    monkeypatch.setattr(dnsmasq, "running_pid", lambda paths: 4242)
    assert manager.restored(served, tmp_path) == served  # only the agent restarted


def test_a_host_that_only_carries_the_segment_gives_its_bridge_a_mac_of_its_own() -> None:
    gateway = bridge.bridge_mac(_overlay())
    assert manager._bridge_mac(_overlay(), "/node/a") == gateway
    carriers = {manager._bridge_mac(_overlay(serve=False), o) for o in ("/node/a", "/node/b")}
    assert gateway not in carriers and len(carriers) == 2
