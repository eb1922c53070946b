"""Network modes, VLANs, Open vSwitch and VXLAN, built by the agent's network code for real.

Namespace-level endpoint tests: the agent's network module runs inside network namespaces
made here (``corral-nt-XXXXXXXX``, see test_network_netns.py), and each "guest" is another
namespace joined to the network's bridge by a veth pair, exactly where libvirt plugs a
guest's tap (a Linux bridge port, or an OVS port with the guest's VLAN tag as libvirt's
``<virtualport type='openvswitch'/><vlan>`` sets it). That proves the same isolation as
guests would, at a fraction of the cost; test_network_node.py does it with real VMs.

Open vSwitch runs inside the test's namespace with private paths (OVS_RUNDIR, OVS_DBDIR,
OVS_LOGDIR under the test's tmp dir), userspace datapath; it dies with the namespace.
Every packet stays inside the namespaces; addresses are in 10.210.0.0/16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_network_netns import (
    Netns,
    attach_client,
    make_ns,
    sh,
    udhcpc,
)

from corral.agent.network import NetworkSpec

pytestmark = pytest.mark.integration
__all__ = ["make_ns"]  # the fixture, shared with test_network_netns

HELPER = r"""
import json, sys
from pathlib import Path
from corral.agent import network as n
from corral.errors import CorralError
op, spec, state = sys.argv[1], n.NetworkSpec(**json.loads(sys.argv[2])), Path(sys.argv[3])
try:
    if op == "ensure":
        result = n.ensure_network(spec, state)
    elif op == "check":
        result = n.check_network(spec)
    elif op == "delete":
        result = n.delete_network(spec, state, keep_bridge=sys.argv[4] == "keep")
    elif op == "status":
        result = n.network_status(spec, state)
    else:
        raise SystemExit(f"unknown op {op}")
    out = {"ok": True, "result": result}
except CorralError as exc:
    out = {"ok": False, "error": type(exc).__name__, "message": exc.message, "field": exc.field}
print(json.dumps(out))
"""


def ovs_env(ns: Netns) -> dict[str, str]:
    d = ns.state.parent / f"ovs-{ns.name[-9:]}"
    return {"OVS_RUNDIR": str(d), "OVS_DBDIR": str(d), "OVS_LOGDIR": str(d)}


def api(ns: Netns, op: str, spec: NetworkSpec, keep: bool = False) -> dict[str, Any]:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c", HELPER, op,
         spec.model_dump_json(), str(ns.state), "keep" if keep else "-"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **ovs_env(ns)},
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def ok(result: dict[str, Any]) -> Any:
    assert result["ok"], result
    return result["result"]


def vsctl(ns: Netns, *args: str) -> str:
    env = ovs_env(ns)
    return ns.exec("ovs-vsctl", f"--db=unix:{env['OVS_RUNDIR']}/db.sock", "--timeout=10",
                   *args).stdout.strip()


def spec(name: str, octet: int, **changes: Any) -> NetworkSpec:
    values: dict[str, Any] = {
        "name": name, "bridge": f"cr-{name}", "subnet": f"10.210.{octet}.0/24",
        "gateway": f"10.210.{octet}.1", "dhcp_start": f"10.210.{octet}.100",
        "dhcp_end": f"10.210.{octet}.199", "dns_domain": "corral",
    }
    values.update(changes)
    return NetworkSpec(**values)


def reaches(src: Netns, address: str) -> bool:
    """One ping gets an answer within 2 s (busybox ping)."""
    proc = src.exec("busybox", "ping", "-c", "1", "-W", "2", address, check=False, timeout=10)
    return proc.returncode == 0


def configure(client: Netns, port: str, ip: str, gateway: str | None = None) -> None:
    client.ip("addr", "add", f"{ip}/24", "dev", port)
    if gateway:
        client.ip("route", "add", "default", "via", gateway)


def guest(host: Netns, make: Any, bridge: str, port: str, hostname: str,
          gateway: str | None = None) -> tuple[Netns, str]:
    """A client namespace on ``bridge``, with the address DHCP gave it."""
    client = make(port)
    attach_client(host, client, bridge, port)
    ip = udhcpc(client, port, hostname)
    configure(client, port, ip, gateway)
    return client, ip


def nothing_left(ns: Netns) -> None:
    assert ns.bridges() == []
    assert ns.nft_chains() == []
    assert not [p for p in ns.pids() if Path(f"/proc/{p}/comm").read_text().strip() == "dnsmasq"]


def test_isolated_routed_and_nat_modes(make_ns: Any) -> None:
    host, outside = make_ns(), make_ns("o")
    # the host's "uplink": a namespace that plays the outside world (10.210.110.0/24)
    host.ip("link", "add", "up0", "type", "veth", "peer", "name", "out0", "netns", outside.name)
    host.ip("addr", "add", "10.210.110.1/24", "dev", "up0")
    host.ip("link", "set", "up0", "up")
    outside.ip("addr", "add", "10.210.110.2/24", "dev", "out0")
    outside.ip("link", "set", "out0", "up")
    outside.ip("route", "add", "10.210.0.0/16", "via", "10.210.110.1")  # routed nets come back

    nets = {
        "iso-a": spec("iso-a", 111, mode="isolated"),
        "iso-b": spec("iso-b", 112, mode="isolated"),
        "rt-a": spec("rt-a", 113, mode="routed"),
        "rt-b": spec("rt-b", 114, mode="routed"),
        "nat-a": spec("nat-a", 115, mode="nat"),
    }
    for s in nets.values():
        ok(api(host, "ensure", s))
    assert ok(api(host, "status", nets["iso-a"])) == {
        "bridge": True, "dnsmasq": True, "nat": False, "isolation": True}
    assert ok(api(host, "status", nets["rt-a"])) == {"bridge": True, "dnsmasq": True, "nat": False}

    ga = {n: guest(host, make_ns, f"cr-{n}", f"p{i}", f"g{i}", f"{s.gateway}")
          for i, (n, s) in enumerate(nets.items())}
    ia, ib, ra, rb, na = (ga[n] for n in nets)
    ia2 = guest(host, make_ns, "cr-iso-a", "p9", "g9", "10.210.111.1")

    # isolated: the gateway (DHCP, DNS) and the own network answer; nothing beyond
    assert reaches(ia[0], "10.210.111.1")
    assert reaches(ia[0], ia2[1])  # bridged within the network (br_netfilter) still flows
    assert not reaches(ia[0], ib[1]) and not reaches(ib[0], ia[1])
    assert not reaches(ia[0], "10.210.110.2")
    assert not reaches(ra[0], ia[1])  # nor into it from another network
    # routed: forwarded both ways, between networks and to the outside, without NAT
    assert reaches(ra[0], rb[1]) and reaches(rb[0], ra[1])
    assert reaches(ra[0], "10.210.110.2") and reaches(outside, ra[1])
    # nat: out (masqueraded), never in unless it is a reply
    assert reaches(na[0], "10.210.110.2") and reaches(na[0], rb[1])
    assert not reaches(outside, na[1]) and not reaches(rb[0], na[1])

    for s in nets.values():
        ok(api(host, "delete", s))
    nothing_left(host)
    assert host.nft_table() == []  # the table went with the last chains


def test_vlan_networks_on_ovs_stay_separate(make_ns: Any) -> None:
    host = make_ns()
    v10 = spec("v10", 121, backend="ovs", vlan=10, bridge="crovs0", mode="isolated")
    v20 = spec("v20", 122, backend="ovs", vlan=20, bridge="crovs0", mode="isolated")
    ok(api(host, "check", v10))  # the dry run starts nothing
    assert host.pids() == []
    ok(api(host, "ensure", v10))
    ok(api(host, "ensure", v20))
    for s in (v10, v20):
        assert ok(api(host, "status", s)) == {
            "bridge": True, "dnsmasq": True, "nat": False, "isolation": True, "vlan": True}
    assert vsctl(host, "get", "bridge", "crovs0", "datapath_type") == "netdev"
    assert vsctl(host, "get", "port", v10.gateway_port, "tag") == "10"
    assert vsctl(host, "get", "port", v20.gateway_port, "tag") == "20"

    def ovs_guest(port: str, tag: int) -> Netns:
        """A guest port as libvirt makes it: a port on the OVS bridge with the VLAN tag."""
        client = make_ns(port)
        host.ip("link", "add", f"h{port}", "type", "veth", "peer", "name", port,
                "netns", client.name)
        host.ip("link", "set", f"h{port}", "up")
        vsctl(host, "add-port", "crovs0", f"h{port}", f"tag={tag}")
        client.ip("link", "set", port, "up")
        return client

    a, b, c = ovs_guest("va", 10), ovs_guest("vb", 10), ovs_guest("vc", 20)
    # DHCP broadcasts reach only the dnsmasq of the guest's own VLAN
    ip_a, ip_b, ip_c = udhcpc(a, "va", "a"), udhcpc(b, "vb", "b"), udhcpc(c, "vc", "c")
    assert ip_a.startswith("10.210.121.") and ip_b.startswith("10.210.121.")
    assert ip_c.startswith("10.210.122.")
    configure(a, "va", ip_a)
    configure(b, "vb", ip_b)
    configure(c, "vc", ip_c)
    assert reaches(a, ip_b) and reaches(a, "10.210.121.1") and reaches(c, "10.210.122.1")
    # L2 separation: in VLAN 10 with an address of VLAN 20's subnet, nothing of VLAN 20 answers
    a.ip("addr", "add", "10.210.122.77/24", "dev", "va")
    assert not reaches(a, ip_c) and not reaches(a, "10.210.122.1")
    # an untagged (trunk) port sees neither network's DHCP
    d = ovs_guest("vd", 10)
    vsctl(host, "clear", "port", "hvd", "tag")
    proc = d.exec("busybox", "udhcpc", "-i", "vd", "-n", "-q", "-t", "2", "-T", "1", "-s",
                  "/bin/true", check=False, timeout=30)
    assert "obtained" not in proc.stdout + proc.stderr

    # the first delete keeps the shared bridge, the last one removes it
    for port in ("hva", "hvb", "hvc", "hvd"):
        vsctl(host, "del-port", port)
    ok(api(host, "delete", v10, keep=True))
    assert vsctl(host, "list-br") == "crovs0"
    assert v10.gateway_port not in vsctl(host, "list-ports", "crovs0").split()
    assert ok(api(host, "status", v20))["dnsmasq"] is True
    ok(api(host, "delete", v20))
    assert vsctl(host, "list-br") == ""
    nothing_left(host)


def test_ovs_untagged_nat_network_with_dns(make_ns: Any) -> None:
    host, client = make_ns(), make_ns("c")
    s = spec("onat", 123, backend="ovs", bridge="cro-nat")
    ok(api(host, "ensure", s))
    assert ok(api(host, "status", s)) == {"bridge": True, "dnsmasq": True, "nat": True}
    client.ip("link", "add", "g0", "type", "veth", "peer", "name", "hg0", "netns", host.name)
    host.ip("link", "set", "hg0", "up")
    vsctl(host, "add-port", "cro-nat", "hg0")
    client.ip("link", "set", "g0", "up")
    ip = udhcpc(client, "g0", "ovsguest")
    configure(client, "g0", ip, "10.210.123.1")
    look = client.exec("busybox", "nslookup", "ovsguest.corral", "10.210.123.1", timeout=15)
    assert ip in look.stdout
    # an agent restart or host boot: ensure again is a no-op, a lost OVS bridge comes back
    pid = int((host.state / "onat" / "dnsmasq.pid").read_text())
    ok(api(host, "ensure", s))
    assert int((host.state / "onat" / "dnsmasq.pid").read_text()) == pid
    vsctl(host, "del-br", "cro-nat")
    ok(api(host, "ensure", s))
    assert ok(api(host, "status", s)) == {"bridge": True, "dnsmasq": True, "nat": True}
    ok(api(host, "delete", s))
    assert vsctl(host, "list-br") == ""
    nothing_left(host)


def _filters_vlans() -> bool:
    return Path("/sys/class/net").exists() and any(
        (d / "vlan_filtering").exists() for d in Path("/sys/class/net").glob("*/bridge"))


def test_linuxbridge_vlans(make_ns: Any) -> None:
    """VLANs on Linux bridges need bridge VLAN filtering in the kernel. Where it is missing
    (this project's machines: no 802.1Q support), the network is refused with a clear 503
    naming the ovs backend, and nothing is left; where present, two VLAN networks share a
    VLAN-filtering trunk, each behind its own access bridge."""
    host = make_ns()
    v30 = spec("v30", 131, vlan=30, bridge="crtrunk0", mode="isolated")
    v40 = spec("v40", 132, vlan=40, bridge="crtrunk0", mode="isolated")
    probe = host.exec(sys.executable, "-c", "import corral.agent.network.bridge as b, json;"
                      "b._cmd.run(['ip','link','add','crprobe0','type','bridge']);"
                      "print(json.dumps(b.vlan_filtering_supported()))").stdout
    host.ip("link", "del", "crprobe0")
    supported = json.loads(probe)
    if not supported:
        # ensure: the trunk cannot be made; everything made before it is undone
        refused = api(host, "ensure", v30)
        assert (refused["error"], refused["field"]) == ("Unavailable", "vlan"), refused
        assert "ovs backend" in refused["message"]
        nothing_left(host)
        assert not (host.state / "v30").exists()
        # the dry run (what the engine asks before it accepts a network) says so up front
        # when a bridge shows the kernel's abilities
        host.ip("link", "add", "crprobe0", "type", "bridge")
        refused = api(host, "check", v30)
        assert (refused["error"], refused["field"]) == ("Unavailable", "vlan"), refused
        host.ip("link", "del", "crprobe0")
        nothing_left(host)
        return
    for s in (v30, v40):
        ok(api(host, "ensure", s))
        assert ok(api(host, "status", s))["vlan"] is True
    trunk = host.ip_json("-d", "link", "show", "dev", "crtrunk0")[0]
    assert trunk["linkinfo"]["info_data"]["vlan_filtering"] == 1
    vlans = json.loads(host.exec("bridge", "-j", "vlan", "show").stdout)
    by_port = {e["ifname"]: [v["vlan"] for v in e.get("vlans", [])] for e in vlans}
    assert by_port[v30.veth_pair[1]] == [30] and by_port[v40.veth_pair[1]] == [40]
    a, ip_a = guest(host, make_ns, v30.access_bridge, "la", "a")
    _b, ip_b = guest(host, make_ns, v40.access_bridge, "lb", "b")
    assert ip_a.startswith("10.210.131.") and ip_b.startswith("10.210.132.")
    assert not reaches(a, ip_b)
    ok(api(host, "delete", v30, keep=True))
    ok(api(host, "delete", v40))
    nothing_left(host)


def test_vxlan_overlay_joins_two_bridges(make_ns: Any) -> None:
    """Two hosts (namespaces joined by an underlay veth, 10.210.140.0/24) each hold the
    network's bridge and a VXLAN device flooding to the other; h1 serves the gateway and
    DHCP, h2 only carries the segment. Endpoints on both get leases from h1 and reach each
    other; the same with the OVS backend."""
    h1, h2 = make_ns("h1"), make_ns("h2")
    h1.ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", h2.name)
    for i, h in enumerate((h1, h2), 1):
        h.ip("addr", "add", f"10.210.140.{i}/24", "dev", "ul0")
        h.ip("link", "set", "ul0", "up")
    for backend, vni, octet in (("linuxbridge", 5001, 141), ("ovs", 5002, 142)):
        name = f"ov{vni}"
        s1 = spec(name, octet, backend=backend, vni=vni, local="10.210.140.1",
                  peers=["10.210.140.2"], mode="isolated")
        s2 = spec(name, octet, backend=backend, vni=vni, local="10.210.140.2",
                  peers=["10.210.140.1"], mode="isolated", serve=False)
        ok(api(h1, "ensure", s1))
        ok(api(h2, "ensure", s2))
        assert ok(api(h1, "status", s1))["overlay"] is True
        assert ok(api(h2, "status", s2)) == {"bridge": True, "overlay": True}
        vx = h1.ip_json("-d", "link", "show", "dev", f"crx{vni}")[0]
        assert vx["mtu"] == 1450 and vx["linkinfo"]["info_data"]["id"] == vni
        conf = (h1.state / name / "dnsmasq.conf").read_text()
        assert "dhcp-option=option:mtu,1450" in conf
        assert not (h2.state / name).exists()  # no dnsmasq on the carrying host

        ends = []
        for h, port in ((h1, f"e1{backend[0]}"), (h2, f"e2{backend[0]}")):
            client = make_ns(port)
            client.ip("link", "add", port, "type", "veth", "peer", "name", f"h{port}",
                      "netns", h.name)
            h.ip("link", "set", f"h{port}", "up")
            if backend == "ovs":
                vsctl(h, "add-port", f"cr-{name}", f"h{port}")
            else:
                h.ip("link", "set", f"h{port}", "master", f"cr-{name}")
            client.ip("link", "set", port, "mtu", "1450", "up")
            ip = udhcpc(client, port, port)  # h2's endpoint: a lease from h1, over VXLAN
            assert ip.startswith(f"10.210.{octet}.")
            configure(client, port, ip)
            ends.append((client, ip))
        (c1, ip1), (c2, ip2) = ends
        assert reaches(c1, ip2) and reaches(c2, ip1)
        assert reaches(c2, f"10.210.{octet}.1")  # h1's gateway, across the overlay
        if backend == "linuxbridge":  # h2 learned that h1's endpoint sits behind h1
            mac1 = c1.ip_json("link", "show", "dev", "e1l")[0]["address"]
            fdb = h2.exec("bridge", "fdb", "show", "dev", f"crx{vni}").stdout
            assert f"{mac1} dst 10.210.140.1" in fdb, fdb

        # the engine changes the peers: stale flood entries go
        ok(api(h2, "ensure", spec(name, octet, backend=backend, vni=vni, local="10.210.140.2",
                                  peers=["10.210.140.9"], mode="isolated", serve=False)))
        fdb = h2.exec("bridge", "fdb", "show", "dev", f"crx{vni}").stdout
        assert "00:00:00:00:00:00 dst 10.210.140.9" in fdb
        assert "00:00:00:00:00:00 dst 10.210.140.1" not in fdb
        for h, s in ((h1, s1), (h2, s2)):
            if backend == "ovs":
                for port in vsctl(h, "list-ports", f"cr-{name}").split():
                    if port.startswith("h"):
                        vsctl(h, "del-port", port)
            ok(api(h, "delete", s))
            assert h.ip("link", "show", "dev", f"crx{vni}", check=False).returncode != 0
            nothing_left(h)


def test_bad_layouts_leave_nothing(make_ns: Any) -> None:
    host = make_ns()
    host.ip("link", "add", "crx7000", "type", "veth", "peer", "name", "hostveth0")
    cases: list[tuple[NetworkSpec, str, str]] = [
        (spec("b1", 151, mode="bridge", subnet=None, gateway=None, dhcp_start=None,
              dhcp_end=None, dns_domain=None, bridge="nosuchbr"), "NotFound", "bridge"),
        (spec("b2", 152, mode="bridge"), "InvalidInput", "subnet"),
        (spec("b3", 153, vlan=5000), "InvalidInput", "vlan"),
        (spec("b4", 154, vni=0), "InvalidInput", "vni"),
        (spec("b5", 155, vni=7000), "Conflict", "vni"),  # crx7000 is not a VXLAN device
        (spec("b6", 156, backend="nope"), "InvalidInput", "backend"),
        (spec("b7", 157, mode="bridged"), "InvalidInput", "mode"),
        (spec("b8", 158, peers=["10.210.140.2"]), "InvalidInput", "peers"),
        (spec("b9", 159, serve=False), "InvalidInput", "serve"),
        (spec("b10", 160, backend="ovs", bridge="hostveth0"), "Conflict", "bridge"),
        (spec("b12", 162, bridge="crx7000"), "InvalidInput", "bridge"),  # corral's own name
    ]
    for s, error, field in cases:
        for op in ("check", "ensure"):
            result = api(host, op, s)
            assert not result["ok"], (op, s)
            assert (result["error"], result["field"]) == (error, field), (op, result)
            nothing_left(host)
            assert not (host.state / s.name).exists()
    # a bridge-mode network joins an existing bridge and builds nothing on it
    host.ip("link", "add", "hostbr0", "type", "bridge")
    joined = spec("b11", 161, mode="bridge", subnet=None, gateway=None, dhcp_start=None,
                  dhcp_end=None, dns_domain=None, bridge="hostbr0")
    ok(api(host, "ensure", joined))
    assert not any(e.get("addr_info") for e in host.ip_json("-4", "addr", "show", "dev", "hostbr0"))
    assert host.nft_chains() == [] and not (host.state / "b11").exists()
    ok(api(host, "delete", joined))
    assert host.bridges() == ["hostbr0"]  # never removed: it is the host's
    sh(["ip", "-n", host.name, "link", "del", "hostbr0"])
