"""Security groups through the engine's API: validation at the edge (4xx naming the field),
nothing made on refusal, the ports pushed to the host's agent (a recording fake at our own
seam; the real agent and real packets: tests/integration/test_security_groups.py), rollback
when the host refuses, NIC membership changed live, QoS in the designed interface."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.api import VmCreate
from corral.domainxml import Domain
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, SecurityGroup, SgRule, Vm
from corral.engine.services import vm_design, vms
from corral.errors import HostError

MAC_A, MAC_B, MAC_O = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"


class FakeAgent:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail = False
        self.leases: list[dict[str, str]] = [{"mac": MAC_B, "ip": "10.210.0.150"}]

    def call(self, method: str, path: str, *, json: Any = None, timeout: float | None = None,
             text: bool = False) -> Any:
        if method == "GET" and path.endswith("/leases"):
            return self.leases
        if self.fail and method == "PUT":
            raise HostError("agent refused")
        self.calls.append((method, path, json))
        return {}

    def ports(self) -> dict[str, Any]:
        """The last body PUT for each port (deleted ports are gone)."""
        out: dict[str, Any] = {}
        for method, path, body in self.calls:
            tap = path.rsplit("/", 1)[1]
            if method == "PUT":
                out[tap] = body
            elif method == "DELETE":
                out.pop(tap, None)
        return out


@pytest.fixture()
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[TestClient, EngineContext, FakeAgent]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    fake = FakeAgent()
    monkeypatch.setattr(ctx, "agent", lambda _host_id: fake)
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        s.add(Network(name="sw", bridge="cr-sw", subnet="10.210.30.0/24", backend="ovs",
                      gateway="10.210.30.1", dhcp_start="10.210.30.128",
                      dhcp_end="10.210.30.254"))
        s.flush()
        image_id = s.query(Image).one().id
        nets = {n.name: n.id for n in s.query(Network)}
        for name, mac, net, ip in (("a", MAC_A, "default", "10.210.0.10"),
                                   ("b", MAC_B, "default", None), ("o", MAC_O, "sw", None)):
            vm = Vm(name=name, image_id=image_id, host_id=host.id, network_id=nets[net],
                    cpus=1, memory_mib=64, disk_bytes=64 << 20, mac=mac, state="stopped",
                    desired_power="stopped")
            s.add(vm)
            s.flush()
            s.add(Nic(vm_id=vm.id, network_id=nets[net], mac=mac, ip=ip, idx=0))
    client = admin_client(ctx)
    yield client, ctx, fake
    ctx.ops.shutdown()


def _counts(ctx: EngineContext) -> tuple[int, int]:
    with ctx.db.session() as s:
        return s.query(SecurityGroup).count(), s.query(SgRule).count()


def test_create_list_show_delete(engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    client, ctx, _fake = engine
    r = client.post("/api/v1/security-groups", json={"name": "web", "description": "www"})
    assert r.status_code == 201, r.text
    group = r.json()
    assert group["name"] == "web" and group["nics"] == []
    assert [(x["direction"], x["protocol"], x["cidr"]) for x in group["rules"]] == [
        ("egress", "any", "0.0.0.0/0")]  # allow-egress is the default, as a removable rule
    r = client.post("/api/v1/security-groups", json={"name": "web"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"
    assert [g["name"] for g in client.get("/api/v1/security-groups").json()] == ["web"]
    assert client.get("/api/v1/security-groups/web").json() == group
    assert client.get("/api/v1/security-groups/nope").status_code == 404
    assert client.delete("/api/v1/security-groups/web").status_code == 204
    assert client.delete("/api/v1/security-groups/web").status_code == 404
    assert _counts(ctx) == (0, 0)


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"direction": "sideways"}, 422, "direction", ""),
        ({"direction": "ingress", "protocol": "sctp"}, 422, "protocol", ""),
        ({"direction": "ingress", "protocol": "tcp", "port_min": 0}, 422, "port_min", "65535"),
        ({"direction": "ingress", "protocol": "tcp", "port_min": 70000}, 422, "port_min", ""),
        ({"direction": "ingress", "protocol": "tcp", "port_min": 90, "port_max": 80}, 422,
         "port_max", "reversed"),
        ({"direction": "ingress", "protocol": "icmp", "port_min": 22}, 422, "port_min",
         "tcp and udp"),
        ({"direction": "ingress", "protocol": "any", "port_min": 22}, 422, "port_min", ""),
        ({"direction": "ingress", "protocol": "tcp", "port_max": 22}, 422, "port_min", ""),
        ({"direction": "ingress", "cidr": "10.0.0.1/8"}, 422, "cidr", "host bits"),
        ({"direction": "ingress", "cidr": "10.0.0.0/33"}, 422, "cidr", ""),
        ({"direction": "ingress", "cidr": "fe80::/10"}, 422, "cidr", "IPv4"),
        ({"direction": "ingress", "cidr": "10.0.0.0/8", "remote_group": "web"}, 422, "cidr",
         "not both"),
        ({"direction": "ingress", "remote_group": "bad name"}, 422, "remote_group", ""),
        ({"direction": "ingress", "remote_group": "ghost"}, 404, "remote_group", "not found"),
        ({"direction": "egress"}, 409, "rule", "already has"),  # the default rule
        ({"direction": "ingress", "colour": "red"}, 422, "colour", ""),
    ],
)
def test_refused_rules_add_nothing(engine: tuple[TestClient, EngineContext, FakeAgent],
                                   body: dict[str, Any], status: int, field: str,
                                   words: str) -> None:
    client, ctx, fake = engine
    assert client.post("/api/v1/security-groups", json={"name": "web"}).status_code == 201
    before = _counts(ctx)
    r = client.post("/api/v1/security-groups/web/rules", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    assert words in err["message"]
    assert _counts(ctx) == before
    assert fake.calls == []


def test_bad_group_names_and_unknown_rules(
        engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    client, _ctx, _fake = engine
    for bad in ("", "has space", "x" * 64, "-dash"):
        r = client.post("/api/v1/security-groups", json={"name": bad})
        assert r.status_code == 422 and r.json()["error"]["field"] == "name", bad
    client.post("/api/v1/security-groups", json={"name": "web"})
    r = client.delete("/api/v1/security-groups/web/rules/nope")
    assert r.status_code == 404 and r.json()["error"]["field"] == "rule_id"
    r = client.post("/api/v1/security-groups/ghost/rules", json={"direction": "ingress"})
    assert r.status_code == 404


def test_membership_pushes_ports_live_and_remote_groups(
        engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    client, _ctx, fake = engine
    client.post("/api/v1/security-groups", json={"name": "web"})
    client.post("/api/v1/security-groups", json={"name": "admin"})
    r = client.post("/api/v1/security-groups/web/rules", json={
        "direction": "ingress", "protocol": "tcp", "port_min": 22, "remote_group": "admin"})
    assert r.status_code == 201, r.text
    assert fake.calls == []  # no NIC in the group yet: nothing to push
    r = client.patch(f"/api/v1/vms/a/nics/{MAC_A}", json={"security_groups": ["web"]})
    assert r.status_code == 200, r.text
    assert r.json()["security_groups"] == ["web"]
    port = fake.ports()["cv52540000000a"]
    assert port["mac"] == MAC_A and port["ips"] == ["10.210.0.10"] and port["filtered"]
    assert port["ip_guard"] is True and port["network"] == "default"
    ssh = [x for x in port["rules"] if x["direction"] == "ingress"]
    assert ssh == [{"direction": "ingress", "protocol": "tcp", "port_min": 22, "port_max": 22,
                    "cidrs": []}]  # admin has no NICs yet: matches nothing
    # b joins admin: a's rule now names b's address (a DHCP lease, asked from the agent)
    r = client.patch(f"/api/v1/vms/b/nics/{MAC_B}", json={"security_groups": ["admin"]})
    assert r.status_code == 200, r.text
    ports = fake.ports()
    assert [x["cidrs"] for x in ports["cv52540000000a"]["rules"]
            if x["direction"] == "ingress"] == [["10.210.0.150/32"]]
    assert ports["cv52540000000b"]["filtered"] and ports["cv52540000000b"]["ips"] == []
    # a rule added to web reaches a's port at once
    fake.calls.clear()
    r = client.post("/api/v1/security-groups/web/rules",
                    json={"direction": "ingress", "protocol": "icmp"})
    assert r.status_code == 201
    assert [c[1] for c in fake.calls] == ["/v1/ports/cv52540000000a"]
    assert {"direction": "ingress", "protocol": "icmp", "port_min": None, "port_max": None,
            "cidrs": ["0.0.0.0/0"]} in fake.ports()["cv52540000000a"]["rules"]
    # groups in use cannot go; nor a group other rules name
    r = client.delete("/api/v1/security-groups/web")
    assert r.status_code == 409 and "used by 1 NIC" in r.json()["error"]["message"]
    client.patch(f"/api/v1/vms/b/nics/{MAC_B}", json={"security_groups": []})
    r = client.delete("/api/v1/security-groups/admin")
    assert r.status_code == 409 and "web" in r.json()["error"]["message"]
    assert fake.ports()["cv52540000000b"]["filtered"] is False  # unfiltered: anti-spoofing only
    shown = client.get("/api/v1/security-groups/web").json()
    assert shown["nics"] == [MAC_A]
    nics = client.get("/api/v1/vms/a/nics").json()
    assert nics[0]["security_groups"] == ["web"]


def test_refused_membership_changes(engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    client, _ctx, fake = engine
    client.post("/api/v1/security-groups", json={"name": "web"})
    r = client.patch(f"/api/v1/vms/a/nics/{MAC_A}", json={"security_groups": ["ghost"]})
    assert r.status_code == 404 and r.json()["error"]["field"] == "security_groups"
    r = client.patch(f"/api/v1/vms/a/nics/{MAC_A}", json={"security_groups": ["bad name"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "security_groups"
    r = client.patch(f"/api/v1/vms/o/nics/{MAC_O}", json={"security_groups": ["web"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "security_groups"
    assert "linuxbridge" in r.json()["error"]["message"]
    r = client.patch("/api/v1/vms/a/nics/52:54:00:00:00:99", json={"security_groups": ["web"]})
    assert r.status_code == 404 and r.json()["error"]["field"] == "mac"
    r = client.post("/api/v1/vms/a/nics", json={"network": "sw", "security_groups": ["web"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "security_groups"
    r = client.post("/api/v1/vms/a/nics", json={"network": "default", "inbound_kbps": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "inbound_kbps"
    assert fake.calls == []
    assert client.get("/api/v1/security-groups/web").json()["nics"] == []


def test_failed_push_restores_the_previous_state(
        engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    client, ctx, fake = engine
    client.post("/api/v1/security-groups", json={"name": "web"})
    assert client.patch(f"/api/v1/vms/a/nics/{MAC_A}",
                        json={"security_groups": ["web"]}).status_code == 200
    fake.fail = True
    before = _counts(ctx)
    r = client.post("/api/v1/security-groups/web/rules",
                    json={"direction": "ingress", "protocol": "tcp", "port_min": 80})
    assert r.status_code == 502, r.text
    assert _counts(ctx) == before
    r = client.patch(f"/api/v1/vms/a/nics/{MAC_A}", json={"security_groups": []})
    assert r.status_code == 502
    assert client.get("/api/v1/vms/a/nics").json()[0]["security_groups"] == ["web"]
    rule = client.get("/api/v1/security-groups/web").json()["rules"][0]["id"]
    r = client.delete(f"/api/v1/security-groups/web/rules/{rule}")
    assert r.status_code == 502
    assert [x["id"] for x in client.get("/api/v1/security-groups/web").json()["rules"]] == [rule]


def test_nic_qos_and_tap_in_the_designed_domain(
        engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    _client, ctx, _fake = engine
    with ctx.db.session() as s:
        nic = s.query(Nic).filter_by(mac=MAC_A).one()
        nic.inbound_kbps, nic.outbound_kbps = 1000, 250
        vm_id = s.query(Vm).filter_by(name="a").one().id
    iface = Domain.from_xml(vm_design.domain_xml(ctx, vm_id)[2]).devices.interfaces[0]
    assert iface.target_dev == "cv52540000000a"
    assert (iface.bandwidth_inbound, iface.bandwidth_outbound) == (1000, 250)
    nics = _client.get("/api/v1/vms/a/nics").json()
    assert (nics[0]["inbound_kbps"], nics[0]["outbound_kbps"]) == (1000, 250)


def test_qos_goes_to_the_port_where_the_host_polices_with_nftables(
        engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    client, ctx, fake = engine
    with ctx.db.session() as s:
        host = s.query(Host).one()
        host.facts = {**host.facts, "qos": "nftables"}
        nic = s.query(Nic).filter_by(mac=MAC_A).one()
        nic.inbound_kbps, nic.outbound_kbps = 1000, 250
        vm_id = s.query(Vm).filter_by(name="a").one().id
    iface = Domain.from_xml(vm_design.domain_xml(ctx, vm_id)[2]).devices.interfaces[0]
    assert (iface.bandwidth_inbound, iface.bandwidth_outbound) == (None, None)
    assert client.patch(f"/api/v1/vms/a/nics/{MAC_A}",
                        json={"security_groups": []}).status_code == 200
    port = fake.ports()["cv52540000000a"]
    assert (port["inbound_kbps"], port["outbound_kbps"]) == (1000, 250)
    assert client.get("/api/v1/hosts").json()[0]["qos"] == "nftables"
    # OVS ports never reach nftables: QoS there is refused on such a host, nothing made
    r = client.post("/api/v1/vms/a/nics", json={"network": "sw", "inbound_kbps": 100})
    assert r.status_code == 503 and r.json()["error"]["field"] == "inbound_kbps"


def test_vm_create_puts_the_first_nic_in_groups(
        engine: tuple[TestClient, EngineContext, FakeAgent],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, ctx, _fake = engine
    client.post("/api/v1/security-groups", json={"name": "web"})
    body = {"name": "c", "image": "tiny", "memory": "64M", "security_groups": ["web"]}
    for bad, status in (({"security_groups": ["ghost"]}, 404),
                        ({"security_groups": ["bad name"]}, 422),
                        ({"security_groups": ["web"], "network": "sw"}, 422)):
        r = client.post("/api/v1/vms", json={**body, **bad})
        assert r.status_code == status, r.text
        assert r.json()["error"]["field"] == "security_groups"
    with ctx.db.session() as s:
        assert s.query(Vm).filter_by(name="c").count() == 0
    submitted: list[str] = []
    monkeypatch.setattr(ctx.ops, "submit", lambda kind, *_a, **_k: submitted.append(kind))
    vms.create(ctx, VmCreate.model_validate(body))
    assert submitted == ["vm.create"]
    mac = client.get("/api/v1/vms/c").json()["mac"]
    assert client.get("/api/v1/security-groups/web").json()["nics"] == [mac]


def test_ovs_nics_get_ports_for_anti_spoofing(
        engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    """A NIC on an OVS network is a port too (the agent makes OpenFlow flows of it), never
    filtered (security groups are refused there)."""
    from corral.engine.services import security_groups

    _client, ctx, fake = engine
    with ctx.db.session() as s:
        vm_id = s.query(Vm).filter_by(name="o").one().id
    security_groups.push_vm(ctx, vm_id)
    port = fake.ports()["cv52540000000c"]
    assert (port["mac"], port["network"], port["ip_guard"], port["filtered"]) == (
        MAC_O, "sw", True, False)
