"""`host remove` through the API over stand-in agents: refused while VMs are defined on the
host (naming them); ``--force`` only for a dead host, whose VMs then stay as ``unknown`` on
no host; what is the host's own (its dir pools) goes, what the cluster shares stays."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Operation, StoragePool, Vm, Volume
from corral.errors import NotFound


def nobody_home(req: httpx.Request) -> httpx.Response:
    """The removed host's agent: remove must not need it (the host may be dead)."""
    raise httpx.ConnectError("connection refused", request=req)


@dataclass
class Cluster:
    ctx: EngineContext
    client: TestClient
    h1: str
    h2: str


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """h1 (up) with VMs a and b and a dir pool holding a volume; h2 (up, empty); a shared
    pool and the default network, which belong to no host."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(nobody_home)
    with ctx.db.session() as s:
        h1 = seed_node(s, str(tmp_path / "storage"), str(tmp_path))
        h2 = Host(name="h2", url="https://10.210.0.2:8444", status="up",
                  facts={"cpus": 2, "memory_mib": 4096})
        s.add(h2)
        image = s.query(Image).filter_by(name="tiny").one()
        local = StoragePool(name="local-h1", type="dir", path=str(tmp_path / "p"),
                            host_id=h1.id, status="ready")
        shared = StoragePool(name="shared", type="shared", path=str(tmp_path / "sh"),
                             status="ready")
        s.add_all([local, shared])
        s.flush()
        for name, pool in (("a", local.id), ("b", None)):
            s.add(Vm(name=name, image_id=image.id, host_id=h1.id, cpus=1, memory_mib=256,
                     disk_bytes=64 << 20, state="running", desired_power="running",
                     root_pool_id=pool))
        s.add(Volume(pool_id=local.id, name="data", format="qcow2", size=1 << 30,
                     status="ready"))
        s.add(Volume(pool_id=shared.id, name="keep", format="qcow2", size=1 << 30,
                     status="ready"))
        s.flush()
        ids = (h1.id, h2.id)
    try:
        yield Cluster(ctx, admin_client(ctx), *ids)
    finally:
        ctx.ops.shutdown()


def finished(c: Cluster, resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    op: dict[str, Any] = c.client.get(f"/api/v1/operations/{resp.json()['id']}/wait",
                                      params={"timeout": 30}).json()
    return op


def set_status(c: Cluster, host_id: str, status: str) -> None:
    with c.ctx.db.session() as s:
        host = s.get(Host, host_id)
        assert host is not None
        host.status = status


def host_names(c: Cluster) -> list[str]:
    return [h["name"] for h in c.client.get("/api/v1/hosts").json()]


def test_a_host_with_vms_is_refused_naming_them(cluster: Cluster) -> None:
    resp = cluster.client.delete("/api/v1/hosts/h1")
    assert resp.status_code == 409
    err = resp.json()["error"]
    assert "host h1 has 2 VM(s) defined on it: a, b" in err["message"]
    assert err["details"]["vms"] == ["a", "b"]
    assert host_names(cluster) == ["h1", "h2"]


@pytest.mark.parametrize("state", ["up", "maintenance"])
def test_force_is_refused_for_a_host_whose_vms_may_still_run(cluster: Cluster,
                                                             state: str) -> None:
    set_status(cluster, cluster.h1, state)
    resp = cluster.client.delete("/api/v1/hosts/h1", params={"force": True})
    assert resp.status_code == 409
    msg = resp.json()["error"]["message"]
    assert f"host h1 is {state}: --force is only for a host that is not up" in msg
    assert host_names(cluster) == ["h1", "h2"]


def test_force_on_a_dead_host_keeps_its_vms_as_unknown_and_forgets_its_own_pools(
        cluster: Cluster) -> None:
    set_status(cluster, cluster.h1, "unresponsive")
    op = finished(cluster, cluster.client.delete("/api/v1/hosts/h1",
                                                 params={"force": True}))
    assert op["status"] == "success", op
    assert "2 VM(s) now unknown: a, b" in op["message"] and "local-h1" in op["message"]
    assert cluster.client.get("/api/v1/hosts/h1").status_code == 404
    assert host_names(cluster) == ["h2"]
    vms = {v["name"]: v for v in cluster.client.get("/api/v1/vms").json()}
    assert {(v["state"], v["host"]) for v in vms.values()} == {("unknown", None)}
    with cluster.ctx.db.session() as s:
        assert s.query(StoragePool).filter_by(name="local-h1").one_or_none() is None
        assert s.query(Volume).filter_by(name="data").one_or_none() is None
        # What the cluster shares stays.
        assert s.query(StoragePool).filter_by(name="shared").one() is not None
        assert s.query(Volume).filter_by(name="keep").one() is not None
        assert s.query(Network).filter_by(name="default").one() is not None
        # The operation held the host's lock and its VMs'.
        locks = s.get(Operation, op["id"]).locks  # type: ignore[union-attr]
        assert locks == ["host:h1", "vm:a", "vm:b"]
    events = [e.data for e in cluster.ctx.bus.recent if e.type == "vm"]
    assert {(e["name"], e["state"]) for e in events} == {("a", "unknown"), ("b", "unknown")}


def test_an_empty_host_is_removed_and_its_agent_forgotten(cluster: Cluster) -> None:
    client_before = cluster.ctx.agent(cluster.h2)
    assert client_before is not None
    op = finished(cluster, cluster.client.delete("/api/v1/hosts/h2"))
    assert op["status"] == "success" and op["type"] == "host.remove", op
    assert host_names(cluster) == ["h1"]
    # The row is gone: no client is made for it any more (nor its certificate accepted).
    with pytest.raises(NotFound):
        cluster.ctx.agent(cluster.h2)
    events = [e.data for e in cluster.ctx.bus.recent if e.type == "host"]
    assert events[-1] == {"name": "h2", "status": "removed", "reason": "host remove"}


def test_a_vm_placed_after_the_request_is_still_seen_under_the_lock(cluster: Cluster) -> None:
    """The check runs again in the operation: a VM defined on the host between the request
    and its run makes the removal fail, and the host stays."""
    with cluster.ctx.db.session() as s:
        image = s.query(Image).filter_by(name="tiny").one()
        late = Vm(name="late", image_id=image.id, host_id=None, cpus=1, memory_mib=64,
                  disk_bytes=1, state="stopped")
        s.add(late)
    with cluster.ctx.ops.try_hold(["host:h2"]) as held:  # an operation holds the host
        assert held
        resp = cluster.client.delete("/api/v1/hosts/h2")
        with cluster.ctx.db.session() as s:
            s.query(Vm).filter_by(name="late").one().host_id = cluster.h2
    op = finished(cluster, resp)
    assert op["status"] == "failure", op
    assert "host h2 has 1 VM(s) defined on it: late" in op["error"]["message"]
    assert host_names(cluster) == ["h1", "h2"]


def test_an_unknown_host_is_a_404(cluster: Cluster) -> None:
    assert cluster.client.delete("/api/v1/hosts/nope").status_code == 404
