"""NICs of VMs through the engine's API: checks at the edge (IPAM, MACs), nothing created on
refusal, the designer's NIC list, static leases in `net show`, rollback when the host fails.

The hot-plug itself needs a real libvirtd (the test:/// driver has no attachDeviceFlags): see
tests/integration/test_vm_nics.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.agent.network import NetworkSpec
from corral.agent.network.dnsmasq import Paths, render_config, render_hosts
from corral.domainxml import Domain
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Operation, Vm
from corral.engine.services import vm_design, vm_nics

BUSY_MAC = "52:54:00:00:00:01"


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path), dns_domain="corral")
        s.add(Network(name="back", bridge="cr-back", subnet="10.210.20.0/24",
                      gateway="10.210.20.1", dhcp_start="10.210.20.128",
                      dhcp_end="10.210.20.254", mode="isolated"))
        s.add(Network(name="lan", bridge="br0", mode="bridge"))
        s.add(Network(name="new", bridge="cr-new", subnet="10.210.21.0/24", status="creating",
                      gateway="10.210.21.1", dhcp_start="10.210.21.128",
                      dhcp_end="10.210.21.254"))
        s.flush()
        image_id, host_id = s.query(Image).one().id, host.id
        nets = {n.name: n.id for n in s.query(Network)}
        busy = Vm(name="busy", image_id=image_id, host_id=host_id, cpus=1, memory_mib=64,
                  disk_bytes=64 << 20, state="stopped", desired_power="stopped")
        s.add(busy)
        s.flush()
        s.add(Nic(vm_id=busy.id, network_id=nets["default"], mac=BUSY_MAC, idx=0))
        s.add(Nic(vm_id=busy.id, network_id=nets["back"], mac="52:54:00:00:00:02",
                  ip="10.210.20.10", idx=1))
        old = Vm(name="old", image_id=image_id, host_id=host_id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="stopped", desired_power="stopped")
        s.add(old)
        s.flush()
        s.add(Nic(vm_id=old.id, network_id=nets["default"], mac="52:54:00:00:00:03", idx=0))
    client = admin_client(ctx)
    yield client, ctx
    ctx.ops.shutdown()


def _counts(ctx: EngineContext) -> tuple[int, int]:
    with ctx.db.session() as s:
        return s.query(Nic).count(), s.query(Operation).count()


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"network": "back", "mac": "52:54:00:zz:00:01"}, 422, "mac", "six hex bytes"),
        ({"network": "back", "mac": "01:00:5e:00:00:01"}, 422, "mac", "multicast"),
        ({"network": "back", "mac": BUSY_MAC}, 409, "mac", "VM busy"),
        ({"network": "back", "mac": "52:54:00:00:00:02"}, 409, "mac", "VM busy"),
        ({"network": "back", "mac": "52:54:00:00:00:03"}, 409, "mac", "VM old"),
        ({"network": "back", "ip": "10.210.20.300"}, 422, "ip", "not an IPv4"),
        ({"network": "back", "ip": "10.210.99.5"}, 422, "ip", "outside"),
        ({"network": "back", "ip": "10.210.20.0"}, 422, "ip", "network or broadcast"),
        ({"network": "back", "ip": "10.210.20.255"}, 422, "ip", "network or broadcast"),
        ({"network": "back", "ip": "10.210.20.1"}, 422, "ip", "gateway"),
        ({"network": "back", "ip": "10.210.20.200"}, 422, "ip", "dynamic DHCP range"),
        ({"network": "back", "ip": "10.210.20.10"}, 409, "ip", "already VM busy"),
        ({"network": "lan", "ip": "192.168.1.5"}, 422, "ip", "no DHCP server"),
        ({"network": "nowhere"}, 404, "network", "not found"),
        ({"network": "bad name"}, 422, "network", "network"),
        ({"network": "new"}, 409, "network", "creating"),
        ({"network": "back", "colour": "red"}, 422, "colour", ""),
        ({}, 422, "network", ""),
    ],
)
def test_refused_nic_add_creates_nothing(engine: tuple[TestClient, EngineContext],
                                         body: dict[str, Any], status: int, field: str,
                                         words: str) -> None:
    client, ctx = engine
    before = _counts(ctx)
    r = client.post("/api/v1/vms/old/nics", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field
    assert words in err["message"]
    assert _counts(ctx) == before


def test_unknown_vm_and_refused_removals(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    before = _counts(ctx)
    assert client.post("/api/v1/vms/ghost/nics", json={"network": "back"}).status_code == 404
    r = client.delete(f"/api/v1/vms/busy/nics/{BUSY_MAC}")
    assert r.status_code == 409 and r.json()["error"]["field"] == "mac"
    assert "first NIC" in r.json()["error"]["message"]
    r = client.delete("/api/v1/vms/busy/nics/52:54:00:00:00:99")
    assert r.status_code == 404 and r.json()["error"]["field"] == "mac"
    r = client.delete("/api/v1/vms/busy/nics/not-a-mac")
    assert r.status_code == 422 and r.json()["error"]["field"] == "mac"
    assert _counts(ctx) == before


def test_list_reservations_and_designed_domain(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    nics = client.get("/api/v1/vms/busy/nics").json()
    assert [(n["index"], n["mac"], n["network"], n["ip"], n["primary"]) for n in nics] == [
        (0, BUSY_MAC, "default", None, True),
        (1, "52:54:00:00:00:02", "back", "10.210.20.10", False)]
    old = client.get("/api/v1/vms/old/nics").json()
    assert [(n["mac"], n["network"]) for n in old] == [("52:54:00:00:00:03", "default")]
    back = client.get("/api/v1/networks/back").json()
    assert back["vms"] == ["busy"]
    assert back["reservations"] == [{"mac": "52:54:00:00:00:02", "ip": "10.210.20.10",
                                     "vm": "busy"}]
    listed = {n["name"]: n for n in client.get("/api/v1/networks").json()}
    assert listed["back"]["reservations"] == back["reservations"]
    assert listed["default"]["vms"] == ["busy", "old"]
    # a network with a NIC of `vm nic add` on it cannot be deleted
    r = client.delete("/api/v1/networks/back")
    assert r.status_code == 409 and "busy" in r.json()["error"]["message"]
    with ctx.db.session() as s:
        busy_id = s.query(Vm).filter_by(name="busy").one().id
    xml = vm_design.domain_xml(ctx, busy_id)[2]
    ifaces = Domain.from_xml(xml).devices.interfaces
    assert [(i.mac, i.source_bridge) for i in ifaces] == [
        (BUSY_MAC, "corral0"), ("52:54:00:00:00:02", "cr-back")]


def test_failed_hot_plug_leaves_nothing(engine: tuple[TestClient, EngineContext]) -> None:
    """The host's agent cannot be reached: the operation fails and no NIC row stays."""
    client, ctx = engine
    r = client.post("/api/v1/vms/old/nics",
                    json={"network": "back", "mac": "52:54:00:AA:BB:CC", "ip": "10.210.20.11"})
    assert r.status_code == 202, r.text
    op = ctx.ops.wait(r.json()["id"], timeout=60)
    assert op.status == "failure", op
    with ctx.db.session() as s:
        assert s.query(Nic).filter_by(mac="52:54:00:aa:bb:cc").count() == 0
    assert client.get("/api/v1/networks/back").json()["reservations"] == [
        {"mac": "52:54:00:00:00:02", "ip": "10.210.20.10", "vm": "busy"}]
    # "old" keeps its one NIC
    assert [n["mac"] for n in client.get("/api/v1/vms/old/nics").json()] == [
        "52:54:00:00:00:03"]


def test_generated_macs_avoid_every_nic(engine: tuple[TestClient, EngineContext],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _client, ctx = engine
    draws = iter([0, 0, 2, 0, 0, 3, 0, 0, 7])  # 00:00:02 and 00:00:03 are taken
    monkeypatch.setattr(vm_nics.random, "randrange", lambda _n: next(draws))
    with ctx.db.session() as s:
        assert vm_nics.new_mac(s) == "52:54:00:00:00:07"


def test_dnsmasq_reads_reservations_from_a_hosts_file(tmp_path: Path) -> None:
    spec = NetworkSpec(name="back", bridge="cr-back", subnet="10.210.20.0/24",
                       gateway="10.210.20.1", dhcp_start="10.210.20.128",
                       dhcp_end="10.210.20.254", nat=False, mode="isolated")
    paths = Paths.of(spec, tmp_path)
    assert f"dhcp-hostsfile={paths.hosts}" in render_config(spec, paths).splitlines()
    text = render_hosts(spec, [("52:54:00:AA:00:01", "10.210.20.10", "web-1")])
    assert text == "52:54:00:aa:00:01,10.210.20.10,web-1\n"
    for bad in ([("52:54:00:aa:00:01", "10.210.21.10", "web")],
                [("52:54:00:aa:00:01\nx", "10.210.20.10", "web")],
                [("52:54:00:aa:00:01", "10.210.20.10", "web\ndhcp-range=x")]):
        with pytest.raises(ValueError):
            render_hosts(spec, bad)


def test_migration_gives_each_vm_its_first_nic(tmp_path: Path) -> None:
    """0004_nics: an existing VM's (network_id, mac) becomes its NIC 0; downgrade drops it."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from corral.engine.db.session import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0002_cloudinit")
    command.upgrade(cfg, "0002_networks")
    command.upgrade(cfg, "0002_storage")
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO images (id, name, format, status, virtual_size, "
                          "file_size, created_at) VALUES ('i1', 'tiny', 'qcow2', 'ready', 1, 1, "
                          "'2026-01-01')"))
        c.execute(sa.text("INSERT INTO networks (id, name, bridge, subnet, gateway, dhcp_start, "
                          "dhcp_end, nat) VALUES ('n1', 'default', 'corral0', '10.210.0.0/24', "
                          "'10.210.0.1', '10.210.0.128', '10.210.0.254', 1)"))
        c.execute(sa.text("INSERT INTO vms (id, name, image_id, network_id, cpus, memory_mib, "
                          "disk_bytes, mac, desired_power, state, created_at) VALUES ('v1', 'a', "
                          "'i1', 'n1', 1, 64, 1, '52:54:00:00:00:05', 'stopped', 'stopped', "
                          "'2026-01-01')"))
    command.upgrade(cfg, "0008_network_nat")
    with eng.begin() as c:  # a VM written by an engine that filled only vms.network_id/mac
        c.execute(sa.text("INSERT INTO vms (id, name, image_id, network_id, cpus, memory_mib, "
                          "disk_bytes, mac, desired_power, state, created_at) VALUES ('v2', 'b', "
                          "'i1', 'n1', 1, 64, 1, '52:54:00:00:00:06', 'stopped', 'stopped', "
                          "'2026-01-01')"))
    command.upgrade(cfg, "heads")
    with eng.begin() as c:
        rows = c.execute(sa.text("SELECT vm_id, network_id, mac, ip, idx, status FROM nics "
                                 "ORDER BY mac"))
        assert [tuple(r) for r in rows] == [("v1", "n1", "52:54:00:00:00:05", None, 0, "ready"),
                                            ("v2", "n1", "52:54:00:00:00:06", None, 0, "ready")]
        columns = {col["name"] for col in sa.inspect(c).get_columns("vms")}
        assert not {"network_id", "mac"} & columns  # the NICs are the nics rows only
    command.downgrade(cfg, "0002_storage")
    with eng.begin() as c:
        assert "nics" not in sa.inspect(c).get_table_names()
    eng.dispose()
