"""Networks at the API edge: bad input is a clear 4xx naming the field, and nothing is made.

The engine runs for real (SQLite, migrations, routes, services); its one host points to an
agent address nothing listens on, so a request that got past the engine's own checks would
show up as a 502 from the agents' dry run, and every refused request is checked to leave no
network row and no operation. Also: where a NIC plugs in for each layout (domain XML).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient
from lxml import etree

from corral.api import NetworkCreate
from corral.domainxml import DomainSpec, design_domain
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Operation, Vm
from corral.engine.services import networks


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path), dns_domain="corral")
        s.add(Network(name="v10", bridge="cr-ovs", subnet="10.210.10.0/24", backend="ovs",
                      gateway="10.210.10.1", dhcp_start="10.210.10.128",
                      dhcp_end="10.210.10.254", vlan=10, mode="isolated"))
        s.add(Network(name="ov", bridge="cr-ov", subnet="10.210.11.0/24", overlay="vxlan",
                      gateway="10.210.11.1", dhcp_start="10.210.11.128",
                      dhcp_end="10.210.11.254", vni=5000, mode="routed"))
        s.flush()
        image_id, host_id = s.query(Image).one().id, host.id
        default_id = s.query(Network).filter_by(name="default").one().id
        busy = Vm(name="busy", image_id=image_id, host_id=host_id, cpus=1, memory_mib=64,
                  disk_bytes=64 << 20, state="running", desired_power="running")
        s.add(busy)
        s.flush()
        s.add(Nic(vm_id=busy.id, network_id=default_id, mac="52:54:00:00:00:01", idx=0))
    client = admin_client(ctx)
    yield client, ctx
    ctx.ops.shutdown()


def _counts(ctx: EngineContext) -> tuple[int, int]:
    with ctx.db.session() as s:
        return s.query(Network).count(), s.query(Operation).count()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"name": "n", "subnet": "10.210.5.0/33"}, "subnet"),
        ({"name": "n", "subnet": "nonsense"}, "subnet"),
        ({"name": "n", "subnet": "10.210.5.7/24"}, "subnet"),  # host bits set
        ({"name": "n", "subnet": "fd00::/64"}, "subnet"),
        ({"name": "n", "subnet": "10.210.5.0/24", "gateway": "10.210.6.1"}, "gateway"),
        ({"name": "n", "subnet": "10.210.5.0/24", "gateway": "nope"}, "gateway"),
        ({"name": "n", "subnet": "10.210.5.0/24", "dhcp_start": "10.210.5.9"}, "dhcp_end"),
        ({"name": "n", "subnet": "10.210.5.0/24", "dhcp_start": "10.210.5.200",
          "dhcp_end": "10.210.5.100"}, "dhcp_start"),
        ({"name": "n", "bridge": "b" * 16}, "bridge"),
        ({"name": "n", "bridge": "br 0"}, "bridge"),
        ({"name": "n", "vlan": 0}, "vlan"),
        ({"name": "n", "vlan": 4095}, "vlan"),
        ({"name": "n", "vni": 16777216}, "vni"),
        ({"name": "n", "overlay": "vxlan"}, "vni"),
        ({"name": "n", "overlay": "gre", "vni": 5}, "overlay"),
        ({"name": "n", "mode": "bridged"}, "mode"),
        ({"name": "n", "backend": "vpp"}, "backend"),
        ({"name": "n", "mode": "bridge"}, "bridge"),
        ({"name": "n", "mode": "bridge", "bridge": "br0", "subnet": "10.210.5.0/24"}, "subnet"),
        ({"name": "n", "mode": "bridge", "bridge": "br0", "vni": 7}, "vni"),
        ({"name": "n", "dns_domain": "Not A Domain"}, "dns_domain"),
        ({"name": "n", "colour": "red"}, "colour"),
    ],
)
def test_invalid_network_create(engine: tuple[TestClient, EngineContext], body: Any,
                                field: str) -> None:
    client, ctx = engine
    before = _counts(ctx)
    r = client.post("/api/v1/networks", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert _counts(ctx) == before


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": "default"}, "name", "already exists"),
        ({"name": "n", "subnet": "10.210.0.128/25"}, "subnet", "overlaps network default"),
        ({"name": "n", "subnet": "10.0.0.0/8"}, "subnet", "overlaps network"),
        ({"name": "n", "bridge": "corral0"}, "bridge", "belongs to network default"),
        ({"name": "n", "bridge": "cr-ovs", "backend": "ovs", "vlan": 10}, "vlan", "v10"),
        ({"name": "n", "bridge": "cr-ovs", "vlan": 20}, "bridge", "one backend"),
        ({"name": "n", "bridge": "cr-ovs", "backend": "ovs"}, "bridge", "only VLAN networks"),
        ({"name": "n", "vni": 5000}, "vni", "network ov"),
    ],
)
def test_conflicting_network_create(engine: tuple[TestClient, EngineContext], body: Any,
                                    field: str, words: str) -> None:
    client, ctx = engine
    before = _counts(ctx)
    r = client.post("/api/v1/networks", json=body)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["field"] == field and words in err["message"]
    assert _counts(ctx) == before


def test_agent_dry_run_failure_makes_nothing(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    before = _counts(ctx)
    r = client.post("/api/v1/networks", json={"name": "fine", "mode": "isolated"})
    assert r.status_code == 502  # the agent (nothing listens) was asked before anything is made
    assert _counts(ctx) == before


def test_delete_refused_while_in_use(engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    before = _counts(ctx)
    r = client.delete("/api/v1/networks/default")
    assert r.status_code == 409
    assert "used by VMs: busy" in r.json()["error"]["message"]
    assert client.delete("/api/v1/networks/nope").status_code == 404
    assert _counts(ctx) == before
    assert client.get("/api/v1/networks/default").json()["status"] == "ready"


def test_list_and_show(engine: tuple[TestClient, EngineContext]) -> None:
    client, _ = engine
    listed = {n["name"]: n for n in client.get("/api/v1/networks").json()}
    assert listed["default"]["vms"] == ["busy"] and listed["default"]["mode"] == "nat"
    assert listed["v10"]["backend"] == "ovs" and listed["v10"]["vlan"] == 10
    ov = client.get("/api/v1/networks/ov").json()
    assert (ov["overlay"], ov["vni"], ov["mtu"]) == ("vxlan", 5000, 1450)
    assert client.get("/api/v1/networks/none").status_code == 404


def test_defaults_and_free_subnet() -> None:
    taken = [networks.parse_subnet("10.210.0.0/24"), networks.parse_subnet("10.210.1.0/24")]
    spec = networks._fill(NetworkCreate(name="web"), taken)
    assert (spec.subnet, spec.gateway, spec.dhcp_start, spec.dhcp_end) == (
        "10.210.2.0/24", "10.210.2.1", "10.210.2.128", "10.210.2.254")
    assert (spec.bridge, spec.kind, spec.dns_domain) == ("cr-web", "nat", "corral")
    long = networks._fill(NetworkCreate(name="a-very-long-name", vlan=5, backend="ovs"), taken)
    assert long.bridge == "cr-ovs"
    assert len(networks._default_bridge(NetworkCreate(name="a-very-long-name"))) == 15
    joined = networks._fill(NetworkCreate(name="b", mode="bridge", bridge="br0"), taken)
    assert joined.subnet is None and joined.dns_domain is None and not joined.managed


def _nic_xml(net: Network) -> Any:
    nic = networks.nic_spec(net, "52:54:00:00:00:02")
    dom = DomainSpec(name="x", uuid="5d0a3f3e-9b4c-4c69-8d8a-6a7b2f0e4c11", vm_id="i",
                     vcpus=1, memory_mib=64, virt_type="qemu", disks=[], nics=[nic],
                     kernel="/k")
    return etree.fromstring(design_domain(dom).to_xml().encode()).find("devices/interface")


def test_where_a_nic_plugs_in() -> None:
    plain = _nic_xml(Network(name="default", bridge="corral0", backend="linuxbridge",
                             mode="nat"))
    assert plain.find("source").get("bridge") == "corral0"
    assert plain.find("virtualport") is None and plain.find("vlan") is None
    ovs = _nic_xml(Network(name="v10", bridge="cr-ovs", backend="ovs", vlan=10, mode="nat"))
    assert ovs.find("source").get("bridge") == "cr-ovs"
    assert ovs.find("virtualport").get("type") == "openvswitch"
    assert ovs.find("vlan/tag").get("id") == "10"
    lb_vlan = Network(name="v30", bridge="cr-trunk", backend="linuxbridge", vlan=30, mode="nat")
    xml = _nic_xml(lb_vlan)
    assert xml.find("source").get("bridge") == networks.spec_of(lb_vlan).access_bridge
    assert xml.find("vlan") is None  # the trunk side of the veth carries the tag
    ov = _nic_xml(Network(name="ov", bridge="cr-ov", backend="linuxbridge", vni=9, mode="nat"))
    assert ov.find("mtu").get("size") == "1450"


def test_delete_of_a_network_left_creating(engine: tuple[TestClient, EngineContext]) -> None:
    """A network whose operation is still running is refused; one left `creating` by an
    operation an engine restart gave up on may be deleted (nothing owns it any more)."""
    client, ctx = engine
    with ctx.db.session() as s:
        s.add(Network(name="stuck", bridge="cr-stuck", subnet="10.210.12.0/24",
                      gateway="10.210.12.1", dhcp_start="10.210.12.128",
                      dhcp_end="10.210.12.254", status="creating"))
        s.add(Operation(type="network.create", status="running",
                        resources={"networks": ["stuck"]}, params={}))
    r = client.delete("/api/v1/networks/stuck")
    assert r.status_code == 409 and "is creating" in r.json()["error"]["message"]
    with ctx.db.session() as s:
        s.query(Operation).filter_by(type="network.create").one().status = "failure"
    r = client.delete("/api/v1/networks/stuck")
    assert r.status_code == 202 and r.json()["type"] == "network.delete"
