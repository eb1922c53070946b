"""A host that joins later (or whose agent restarted) catches up (corral.engine.services.
host_sync): its first report gets it every ready network (an overlay with its VXLAN peers),
every ready cluster-wide pool and the ports of its VMs, before its VMs are resynced; the
other hosts learn it as a VXLAN peer; a removed host leaves their peer lists. The agents
are stand-ins (httpx.MockTransport) noting what they were sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.agent_api.reports import HostReport
from corral.domainxml import tap_of
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, StoragePool, Vm
from corral.engine.reconciler import Reconciler
from corral.engine.services import host_lifecycle, host_sync

ADDR = {"h1": "10.210.0.1", "h2": "10.210.0.2", "h3": "10.210.0.3"}
MAC = "52:54:00:aa:bb:01"


@dataclass
class Agent:
    """One host's agent: answers what the engine sends, and notes it."""

    sent: list[tuple[str, str, Any]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)  # "METHOD /path" answered with a 500

    def handle(self, req: httpx.Request) -> httpx.Response:
        what = f"{req.method} {req.url.path}"
        raw = req.read()
        self.sent.append((req.method, req.url.path, json.loads(raw) if raw else None))
        if what in self.fail:
            return httpx.Response(500, json={"error": {"code": "host_error", "message": "broke"}})
        path = req.url.path
        if what == "GET /v1/host":
            return httpx.Response(200, json={
                "hostname": "h", "agent_version": "0", "cpus": 2, "memory_mib": 4096,
                "virt_type": "qemu", "libvirt_version": "9.0.0", "storage_dir": "/s",
                "console_dir": "/c", "storage_free": 1 << 30})
        if what == "GET /v1/domains":
            return httpx.Response(200, json=[])
        if req.method == "PUT" and path.startswith("/v1/networks/"):
            return httpx.Response(200, json={"bridge": True})
        if req.method == "PUT" and path.startswith("/v1/pools/"):
            return httpx.Response(200, json={"capacity": 1, "allocation": 0, "available": 1})
        if req.method == "PUT" and path.startswith("/v1/ports/"):
            return httpx.Response(200, json={"tap": path.rsplit("/", 1)[1], "id": 1})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": what}})

    def puts(self, prefix: str) -> dict[str, Any]:
        """name -> last body of the PUTs under ``prefix`` (``/v1/networks/``...)."""
        return {p.removeprefix(prefix): body for m, p, body in self.sent
                if m == "PUT" and p.startswith(prefix)}


@dataclass
class Cluster:
    ctx: EngineContext
    agents: dict[str, Agent]
    ids: dict[str, str]
    reconciler: Reconciler

    def first_report(self, host: str, boot_id: str = "boot-1") -> None:
        self.reconciler.report(self.ids[host], HostReport(
            boot_id=boot_id, seq=0, interval_s=1.0, digest="", domains=0, load_1m=0.0,
            memory_available_mib=1024, events=[]))
        self.reconciler.drain()

    def status(self, host: str) -> str:
        with self.ctx.db.session() as s:
            row = s.get(Host, self.ids[host])
            assert row is not None
            return row.status


@pytest.fixture(name="c")
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """h1 and h2 up; h3 joined (down until it reports) with a VM on it; networks `default`
    and overlay `ov` ready, `busy` being created; pools: shared `sh` and rbd `rb` ready,
    shared `new` being created, dir `d1` of h1."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    agents = {name: Agent() for name in ADDR}
    by_addr = {addr: agents[name] for name, addr in ADDR.items()}
    ctx.agent_transport = httpx.MockTransport(lambda r: by_addr[r.url.host].handle(r))
    ids: dict[str, str] = {}
    with ctx.db.session() as s:
        for name, addr in ADDR.items():
            row = Host(name=name, url=f"https://{addr}:8443",
                       status="down" if name == "h3" else "up", facts={})
            s.add(row)
            s.flush()
            ids[name] = row.id
        default = Network(name="default", bridge="corral0", subnet="10.210.9.0/24",
                          gateway="10.210.9.1", dhcp_start="10.210.9.128",
                          dhcp_end="10.210.9.254", dns_domain="corral")
        s.add_all([default,
                   Network(name="ov", bridge="cr-ov", subnet="10.210.8.0/24",
                           gateway="10.210.8.1", dhcp_start="10.210.8.128",
                           dhcp_end="10.210.8.254", dns_domain="corral", vni=42,
                           overlay="vxlan"),
                   Network(name="busy", bridge="cr-busy", subnet="10.210.7.0/24",
                           gateway="10.210.7.1", dhcp_start="10.210.7.128",
                           dhcp_end="10.210.7.254", status="creating"),
                   StoragePool(name="sh", type="shared", path="/srv/sh", status="ready"),
                   StoragePool(name="rb", type="rbd", ceph_conf="/etc/ceph/ceph.conf",
                               ceph_pool="rbd", status="ready"),
                   StoragePool(name="new", type="shared", path="/srv/new", status="creating"),
                   StoragePool(name="d1", type="dir", path="/srv/d1", host_id=ids["h1"],
                               status="ready")])
        image = Image(name="tiny", status="ready")
        s.add(image)
        s.flush()
        vm = Vm(name="web", image_id=image.id, host_id=ids["h3"], cpus=1, memory_mib=64,
                disk_bytes=1, state="stopped", desired_power="stopped")
        s.add(vm)
        s.flush()
        s.add(Nic(vm_id=vm.id, network_id=default.id, mac=MAC, idx=0))
    yield Cluster(ctx, agents, ids, Reconciler(ctx, clock=lambda: 1000.0))
    ctx.ops.shutdown()


def test_a_host_that_joins_gets_networks_pools_and_ports_before_its_resync(c: Cluster) -> None:
    c.first_report("h3")
    assert c.status("h3") == "up"
    h3 = c.agents["h3"]
    nets = h3.puts("/v1/networks/")
    assert sorted(nets) == ["default", "ov"]  # not `busy`: its create owns it
    assert nets["ov"]["local"] == ADDR["h3"]
    assert sorted(nets["ov"]["peers"]) == [ADDR["h1"], ADDR["h2"]]
    assert nets["ov"]["serve"] is False  # h1, first by name, serves the segment
    pools = h3.puts("/v1/pools/")
    assert sorted(pools) == ["rb", "sh"]  # cluster-wide and ready only; d1 is h1's
    assert {p["marker"] for p in pools.values()} == {"verify"}  # sh's marker must be seen
    assert list(h3.puts("/v1/ports/")) == [tap_of(MAC)]
    calls = [f"{m} {p}" for m, p, _ in h3.sent]
    assert calls.index("GET /v1/domains") > calls.index("PUT /v1/networks/default")
    for other in ("h1", "h2"):  # they flood overlay traffic to the new host now
        theirs = c.agents[other].puts("/v1/networks/")
        assert list(theirs) == ["ov"]
        assert ADDR["h3"] in theirs["ov"]["peers"]


def test_catching_up_again_sends_the_same_and_only_on_a_restart(c: Cluster) -> None:
    c.first_report("h3")
    first = c.agents["h3"].puts("/v1/networks/"), c.agents["h3"].puts("/v1/pools/")
    c.agents["h3"].sent.clear()
    c.reconciler.report(c.ids["h3"], HostReport(boot_id="boot-1", seq=1, interval_s=1.0,
                                                digest="", domains=0, load_1m=0.0,
                                                memory_available_mib=1024, events=[]))
    c.reconciler.drain()
    assert c.agents["h3"].puts("/v1/networks/") == {}  # the same agent: nothing to catch up
    c.first_report("h3", boot_id="boot-2")  # its agent restarted: idempotent PUTs again
    assert (c.agents["h3"].puts("/v1/networks/"), c.agents["h3"].puts("/v1/pools/")) == first


def test_what_fails_is_named_and_does_not_stop_the_rest(c: Cluster) -> None:
    c.agents["h3"].fail = {"PUT /v1/networks/default"}
    c.agents["h2"].fail = {"PUT /v1/networks/ov"}
    problems = host_sync.catch_up(c.ctx, c.ids["h3"])
    assert len(problems) == 2
    assert problems[0].startswith("network default: ")
    assert problems[1].startswith("VXLAN peers on host h2: ")
    assert sorted(c.agents["h3"].puts("/v1/pools/")) == ["rb", "sh"]
    assert list(c.agents["h3"].puts("/v1/ports/")) == [tap_of(MAC)]
    assert "ov" in c.agents["h1"].puts("/v1/networks/")


def test_a_removed_host_leaves_the_peers_of_the_others(c: Cluster) -> None:
    c.first_report("h3")
    for a in c.agents.values():
        a.sent.clear()
    op = host_lifecycle.remove(c.ctx, "h1")  # it served `ov`: h2 serves it now
    assert c.ctx.ops.wait(op.id, timeout=20).status == "success"
    h2, h3 = c.agents["h2"].puts("/v1/networks/")["ov"], c.agents["h3"].puts("/v1/networks/")["ov"]
    assert (h2["peers"], h2["serve"]) == ([ADDR["h3"]], True)
    assert (h3["peers"], h3["serve"]) == ([ADDR["h2"]], False)
    assert c.agents["h1"].sent == []
