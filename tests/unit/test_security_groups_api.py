"""Security groups through the engine's API: validation at the edge (4xx naming the field),
nothing made on refusal, the ports pushed to the host's agent (the real AgentClient over a
recording httpx.MockTransport; the real agent and real packets:
tests/integration/test_security_groups.py), rollback when the host refuses, NIC membership
changed live, QoS in the designed interface, pushes to several hosts at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.api import VmCreate
from corral.domainxml import Domain, tap_of
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, SecurityGroup, SgRule, Vm
from corral.engine.services import security_groups, vm_design, vms
from corral.errors import HostError

MAC_A, MAC_B, MAC_O = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"
MAC_D = "52:54:00:00:00:0d"  # VM d, on a second host (the tests of pushes at once)


class FakeAgent:
    """The agents' side of the wire (the engine's real AgentClient sends to it through
    httpx.MockTransport): answers as the agent does, records what was sent.
    ``before_put(host)`` runs first in each PUT of a port (``host``: the agent's address);
    a response it returns is the answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []  # (method, path, body); not failed PUTs
        self.hosts: list[str] = []  # the agent address of each recorded call
        self.fail = False
        self.leases: list[dict[str, Any]] = [
            {"mac": MAC_B, "ip": "10.210.0.150", "hostname": "b", "expires": 0}]
        self.before_put: Callable[[str], httpx.Response | None] = lambda _host: None
        self._lock = threading.Lock()  # pushes to several hosts come in at once

    def handle(self, request: httpx.Request) -> httpx.Response:
        method, path, host = request.method, request.url.path, request.url.host
        body = json.loads(request.content) if request.content else None
        if method == "GET" and path.endswith("/leases"):
            return httpx.Response(200, json=self.leases)
        if method == "PUT" and path.startswith("/v1/ports/"):
            answer = self.before_put(host)
            if answer is not None:
                return answer
            if self.fail:
                return _refused("agent refused")
        with self._lock:
            self.calls.append((method, path, body))
            self.hosts.append(host)
        tap = path.rsplit("/", 1)[1]
        if method == "PUT":
            return httpx.Response(200, json={"tap": tap, "id": len(self.calls)})
        if method == "DELETE":
            return httpx.Response(200, json={"deleted": True})
        return _refused(f"no route {method} {path} in this fake", 404, "not_found")

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


def _refused(message: str, status: int = 502, code: str = "host_error") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext, FakeAgent]]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    fake = FakeAgent()
    ctx.agent_transport = httpx.MockTransport(fake.handle)
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
            vm = Vm(name=name, image_id=image_id, host_id=host.id, cpus=1, memory_mib=64,
                    disk_bytes=64 << 20, state="stopped", desired_power="stopped")
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
    _client, ctx, fake = engine
    with ctx.db.session() as s:
        vm_id = s.query(Vm).filter_by(name="o").one().id
    security_groups.push_vm(ctx, vm_id)
    port = fake.ports()["cv52540000000c"]
    assert (port["mac"], port["network"], port["ip_guard"], port["filtered"]) == (
        MAC_O, "sw", True, False)


H1, H2 = "127.0.0.1", "127.0.0.2"  # the agents' addresses: h1 (seed_node), h2


def _nics_on_two_hosts(ctx: EngineContext) -> list[str]:
    """Host h2 with VM d (NIC MAC_D); the ids of a's NIC (on h1) and d's."""
    with ctx.db.session() as s:
        h2 = Host(name="h2", url=f"http://{H2}:9", status="up", facts={})
        s.add(h2)
        s.flush()
        net_id = s.query(Network).filter_by(name="default").one().id
        d = Vm(name="d", image_id=s.query(Image).one().id, host_id=h2.id, cpus=1,
               memory_mib=64, disk_bytes=64 << 20, state="stopped", desired_power="stopped")
        s.add(d)
        s.flush()
        s.add(Nic(vm_id=d.id, network_id=net_id, mac=MAC_D, idx=0))
        s.flush()
        return [n.id for n in s.query(Nic).filter(Nic.mac.in_([MAC_A, MAC_D]))]


def test_hosts_are_pushed_to_at_once(
        engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    """Each host's PUT waits for the other's to be in flight: serial pushes would break the
    barrier (after 5 s) instead of passing it."""
    _client, ctx, fake = engine
    nic_ids = _nics_on_two_hosts(ctx)
    barrier = threading.Barrier(2, timeout=5)

    def both_in_flight(_host: str) -> None:
        barrier.wait()

    fake.before_put = both_in_flight
    security_groups.push_nics(ctx, nic_ids)
    assert sorted(fake.hosts) == [H1, H2]
    assert set(fake.ports()) == {tap_of(MAC_A), tap_of(MAC_D)}


def test_a_failing_host_is_named_and_does_not_stop_the_others(
        engine: tuple[TestClient, EngineContext, FakeAgent]) -> None:
    _client, ctx, fake = engine
    nic_ids = _nics_on_two_hosts(ctx)
    h2_failed = threading.Event()

    def h2_fails_first(host: str) -> httpx.Response | None:
        if host == H2:
            h2_failed.set()
            return _refused("nftables said no")
        assert h2_failed.wait(5)  # h1's PUT goes on after h2's failed
        return None

    fake.before_put = h2_fails_first
    with pytest.raises(HostError) as raised:
        security_groups.push_nics(ctx, nic_ids)
    assert "host h2" in raised.value.message and "nftables said no" in raised.value.message
    assert "h1" not in raised.value.message
    assert raised.value.details["failed_hosts"] == {"h2": "nftables said no"}
    assert list(fake.ports()) == [tap_of(MAC_A)] and fake.hosts == [H1]


def test_an_older_ruleset_arriving_late_is_dropped() -> None:
    """Two pushes of one port: the one that read the database later wins, whichever is
    sent last; a DELETE is ordered the same way."""
    order = security_groups._PortOrder()
    agent: Any = type("Agent", (), {"url": "http://h1"})()
    older, newer = order.draw(), order.draw()
    with order.turn(agent, "cv1", newer) as fresh:
        assert fresh
    with order.turn(agent, "cv1", older) as fresh:
        assert not fresh  # not sent: it would undo the newer ruleset
    with order.turn(agent, "cv2", older) as fresh:
        assert fresh  # other ports are their own
    with pytest.raises(HostError), order.turn(agent, "cv3", order.draw()) as fresh:
        raise HostError("refused")  # a failed send records nothing
    with order.turn(agent, "cv3", older) as fresh:
        assert fresh
