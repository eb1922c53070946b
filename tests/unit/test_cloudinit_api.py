"""cloud-init at the API edge: bad settings are a 4xx naming the field; PATCH only when stopped.

The engine runs for real (SQLite, migrations, routes, services) with one host whose agent
address nothing listens on: a request that got past the checks shows up as a row or an
operation, which the tests look for.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, Operation, Vm
from corral.engine.services.vm_design import domain_xml

KEY = "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519" + b"\1" * 36).decode() + " me"


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        host = seed_node(s, "/srv/st", "/srv/con")
        s.flush()
        image_id, host_id, net_id = s.query(Image).one().id, host.id, s.query(Network).one().id
        for name, state, mac in (("busy", "running", "52:54:00:00:00:01"),
                                 ("idle", "stopped", "52:54:00:00:00:02")):
            vm = Vm(name=name, image_id=image_id, host_id=host_id, cpus=1,
                    memory_mib=64, disk_bytes=64 << 20, state=state, desired_power=state,
                    cloud_init={"hostname": "first", "revision": 0} if name == "idle" else None)
            s.add(vm)
            s.flush()
            s.add(Nic(vm_id=vm.id, network_id=net_id, mac=mac, idx=0))
    client = admin_client(ctx)
    yield client, ctx
    ctx.ops.shutdown()


def _counts(ctx: EngineContext) -> tuple[int, int]:
    with ctx.db.session() as s:
        return s.query(Vm).count(), s.query(Operation).count()


@pytest.mark.parametrize(
    ("cloud_init", "field"),
    [
        ({"hostname": "no_underscores"}, "cloud_init.hostname"),
        ({"ssh_authorized_keys": ["not a key"]}, "cloud_init.ssh_authorized_keys"),
        ({"password_hash": "plaintext"}, "cloud_init.password_hash"),
        ({"user": "UPPER"}, "cloud_init.user"),
        ({"user_data": "#cloud-config\n[1, 2]\n"}, "cloud_init.user_data"),
        ({"network_config": "version: 3\n"}, "cloud_init.network_config"),
        ({"unknown": 1}, "cloud_init.unknown"),
        ({"user_data": "#!/bin/sh\n", "password_hash": "$6$saltsalt$x"}, "cloud_init"),
    ],
)
def test_bad_cloud_init_on_create_is_422_and_nothing_made(
    engine: tuple[TestClient, EngineContext], cloud_init: dict[str, Any], field: str
) -> None:
    client, ctx = engine
    before = _counts(ctx)
    resp = client.post("/api/v1/vms", json={"name": "new", "image": "tiny", "cloud_init": cloud_init})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert _counts(ctx) == before


def test_patch_needs_a_stopped_vm_and_something_to_change(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    before = _counts(ctx)
    resp = client.patch("/api/v1/vms/busy", json={"cloud_init": {"hostname": "x"}})
    assert resp.status_code == 409 and "stop it first" in resp.json()["error"]["message"]
    assert client.patch("/api/v1/vms/nope", json={"cloud_init": None}).status_code == 404
    resp = client.patch("/api/v1/vms/idle", json={})
    assert resp.status_code == 422 and "nothing to change" in resp.json()["error"]["message"]
    resp = client.patch("/api/v1/vms/idle", json={"cloud_init": {"hostname": "a_b"}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "cloud_init.hostname"
    assert _counts(ctx) == before


def test_failed_patch_leaves_the_settings_as_they_were(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ = engine
    resp = client.patch("/api/v1/vms/idle", json={"cloud_init": {"hostname": "second"}})
    assert resp.status_code == 202
    op = client.get(f"/api/v1/operations/{resp.json()['id']}/wait", params={"timeout": 30}).json()
    assert op["status"] == "failure" and "unreachable" in op["error"]["message"]
    vm = client.get("/api/v1/vms/idle").json()
    assert vm["cloud_init"]["hostname"] == "first"


def test_the_seed_is_a_read_only_cdrom_on_virtio_scsi(engine: tuple[TestClient, EngineContext]) -> None:
    _, ctx = engine
    with ctx.db.session() as s:
        idle, busy = (s.query(Vm).filter_by(name=n).one().id for n in ("idle", "busy"))
    xml = domain_xml(ctx, idle)[2]
    assert "/srv/st/vms/idle-cidata.iso" in xml and "device=\"cdrom\"" in xml
    assert "bus=\"scsi\"" in xml and "<readonly/>" in xml and "virtio-scsi" in xml
    assert "cidata" not in domain_xml(ctx, busy)[2]


def test_shown_vm_carries_its_cloud_init(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ = engine
    assert client.get("/api/v1/vms/idle").json()["cloud_init"]["hostname"] == "first"
    assert client.get("/api/v1/vms/busy").json()["cloud_init"] is None
    assert client.get("/api/v1/vms/nope/addresses").status_code == 404


def test_a_domain_designed_for_another_host_carries_that_hosts_paths(
        engine: tuple[TestClient, EngineContext]) -> None:
    """What a migration needs: the same VM designed for host h2 (its own storage and console
    dirs) names none of h1's paths."""
    _, ctx = engine
    with ctx.db.session() as s:
        h2 = Host(name="h2", url="http://127.0.0.1:9", status="up",
                  facts={"virt_type": "qemu", "storage_dir": "/data/h2",
                         "console_dir": "/log/h2"})
        s.add(h2)
        s.flush()
        idle, h2_id = s.query(Vm).filter_by(name="idle").one().id, h2.id
    name, host_id, xml = domain_xml(ctx, idle, host_id=h2_id)
    assert (name, host_id) == ("idle", h2_id)
    for path in ("/data/h2/vms/idle.qcow2", "/data/h2/vms/idle-cidata.iso", "/log/h2/idle.log"):
        assert path in xml
    assert "/srv/" not in xml
    assert "/srv/st/vms/idle.qcow2" in domain_xml(ctx, idle)[2]  # its own host by default
