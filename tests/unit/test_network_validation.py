"""Pure checks of the agent's network module: spec validation, dnsmasq config, nft ruleset,
lease parsing and the route-overlap logic. Nothing here touches the host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.agent.network import Lease, NetworkSpec, _cmd, dnsmasq, nat, validate_spec
from corral.agent.network.routes import find_overlaps
from corral.agent.network.spec import network_dir
from corral.errors import InvalidInput, Unavailable

GOOD = NetworkSpec(
    name="default",
    bridge="corral0",
    subnet="10.210.0.0/24",
    gateway="10.210.0.1",
    dhcp_start="10.210.0.100",
    dhcp_end="10.210.0.199",
    dns_domain="corral",
)


def spec(**changes: Any) -> NetworkSpec:
    # Unvalidated, as a body could never be: validate_spec must refuse bad types itself.
    return GOOD.model_copy(update=changes)


def test_good_spec_passes() -> None:
    validate_spec(GOOD)
    validate_spec(spec(nat=False, dns_domain=None))
    validate_spec(spec(bridge="a" * 15, name="n" * 63))
    validate_spec(spec(subnet="10.210.4.0/30", gateway="10.210.4.1",
                       dhcp_start="10.210.4.2", dhcp_end="10.210.4.2"))
    validate_spec(spec(dns_domain="lab.example-1"))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"name": "bad name"}, "name"),
        ({"name": "-x"}, "name"),
        ({"name": "x\ninterface=eth0"}, "name"),
        ({"name": "default\n"}, "name"),
        ({"name": "../etc"}, "name"),
        ({"bridge": "b" * 16}, "bridge"),
        ({"bridge": ""}, "bridge"),
        ({"bridge": "br 0"}, "bridge"),
        ({"bridge": "-br0"}, "bridge"),
        ({"bridge": "br/0"}, "bridge"),
        ({"bridge": 'br"0'}, "bridge"),
        ({"bridge": "br0\n"}, "bridge"),
        ({"subnet": "10.210.0.0"}, "subnet"),
        ({"subnet": "10.210.0.0/33"}, "subnet"),
        ({"subnet": "nonsense"}, "subnet"),
        ({"subnet": "10.210.0.1/24"}, "subnet"),  # host bits set
        ({"subnet": "10.210.0.0/24\n"}, "subnet"),
        ({"subnet": "fd00::/64"}, "subnet"),
        ({"subnet": "10.210.0.0/31"}, "subnet"),
        ({"subnet": "10.0.0.0/7"}, "subnet"),
        ({"subnet": "127.0.0.0/8", "gateway": "127.0.0.1", "dhcp_start": "127.0.0.2",
          "dhcp_end": "127.0.0.9"}, "subnet"),
        ({"subnet": "169.254.0.0/16", "gateway": "169.254.0.1", "dhcp_start": "169.254.0.2",
          "dhcp_end": "169.254.0.9"}, "subnet"),
        ({"subnet": "224.0.0.0/24"}, "subnet"),
        ({"subnet": 24}, "subnet"),
        ({"gateway": "10.211.0.1"}, "gateway"),  # outside the subnet
        ({"gateway": "10.210.0.0"}, "gateway"),  # network address
        ({"gateway": "10.210.0.255"}, "gateway"),  # broadcast
        ({"gateway": "10.210.0.150"}, "gateway"),  # inside the DHCP range
        ({"gateway": "10.210.0.1,10.210.0.2"}, "gateway"),
        ({"gateway": "gw"}, "gateway"),
        ({"dhcp_start": "10.211.0.100"}, "dhcp_start"),
        ({"dhcp_start": "10.210.0.200"}, "dhcp_start"),  # after the end
        ({"dhcp_end": "10.210.0.255"}, "dhcp_end"),
        ({"dhcp_end": "10.210.0.200\ndhcp-script=/bin/sh"}, "dhcp_end"),
        ({"dns_domain": ""}, "dns_domain"),
        ({"dns_domain": "Corral"}, "dns_domain"),
        ({"dns_domain": "a..b"}, "dns_domain"),
        ({"dns_domain": "-a"}, "dns_domain"),
        ({"dns_domain": "corral/\nserver=8.8.8.8"}, "dns_domain"),
        ({"dns_domain": "x" * 64}, "dns_domain"),
        ({"nat": "yes"}, "nat"),
    ],
)
def test_bad_spec_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_spec(spec(**changes))
    assert info.value.field == field
    assert info.value.status == 422


def test_state_dir_must_be_safe_for_the_config(tmp_path: Path) -> None:
    assert network_dir(GOOD, tmp_path) == tmp_path / "default"
    assert network_dir(GOOD, Path("rel")).is_absolute()
    for bad in ("/tmp/a b", "/tmp/x\nserver=1.1.1.1", "/tmp/#x", "/tmp/../etc"):
        with pytest.raises(InvalidInput) as info:
            network_dir(GOOD, Path(bad))
        assert info.value.field == "state_dir"


def test_dnsmasq_config(tmp_path: Path) -> None:
    paths = dnsmasq.Paths.of(GOOD, tmp_path)
    lines = dnsmasq.render_config(GOOD, paths).splitlines()
    for expected in (
        "bind-interfaces",
        "interface=corral0",
        "except-interface=lo",
        "dhcp-range=10.210.0.100,10.210.0.199,255.255.255.0,12h",
        f"dhcp-leasefile={tmp_path}/default/dnsmasq.leases",
        f"pid-file={tmp_path}/default/dnsmasq.pid",
        f"log-facility={tmp_path}/default/dnsmasq.log",
        "no-resolv",
        "no-hosts",
        "dhcp-authoritative",
        "dhcp-option=option:router,10.210.0.1",
        "dhcp-option=option:dns-server,10.210.0.1",
        "domain=corral",
        "local=/corral/",
        "expand-hosts",
    ):
        assert expected in lines
    options = [line.split("=")[0] for line in lines if not line.startswith("#")]
    assert "server" not in options  # no upstream resolver
    # the one script: corral's own (lease changes -> the NICs' firewall rules)
    assert [line for line in lines if line.startswith("dhcp-script=")] == [
        f"dhcp-script={tmp_path}/dhcp-learn.sh"]

    plain = dnsmasq.render_config(spec(dns_domain=None), paths)
    assert "domain=" not in plain and "expand-hosts" not in plain


def test_lease_parsing() -> None:
    text = (
        "1795292643 8E:C5:9C:B0:50:B3 10.210.0.142 client1 01:8e:c5:9c:b0:50:b3\n"
        "0 52:54:00:00:00:01 10.210.0.150 * *\n"
        "duid 00:01:00:01:2c:aa\n"
        "1795292643 52:54:00:00:00:02 fd00::5 v6host 00:01\n"
        "garbage\n"
        "notanumber 52:54:00:00:00:03 10.210.0.151 x *\n"
    )
    assert dnsmasq.parse_leases(text) == [
        Lease(mac="8e:c5:9c:b0:50:b3", ip="10.210.0.142", hostname="client1",
              expires=1795292643),
        Lease(mac="52:54:00:00:00:01", ip="10.210.0.150", hostname=None, expires=0),
    ]
    assert dnsmasq.parse_leases("") == []


def test_leases_of_a_network_without_files(tmp_path: Path) -> None:
    assert dnsmasq.leases(GOOD, tmp_path) == []
    assert dnsmasq.running_pid(dnsmasq.Paths.of(GOOD, tmp_path)) is None


def test_nft_ruleset_is_json_and_tagged() -> None:
    doc = nat.render_ruleset(GOOD)["nftables"]
    assert doc[0] == {"add": {"table": {"family": "inet", "name": "corral"}}}
    chains = [c["add"]["chain"] for c in doc if "chain" in c.get("add", {})]
    assert [(c["name"], c["hook"], c["type"]) for c in chains] == [
        ("fwd-corral0", "forward", "filter"),
        ("nat-corral0", "postrouting", "nat"),
    ]
    assert all(c["table"] == "corral" and c["policy"] == "accept" for c in chains)
    rules = [c["add"]["rule"] for c in doc if "rule" in c.get("add", {})]
    assert rules and all(r["comment"] == "corral:default" for r in rules)
    masq = [r for r in rules if {"masquerade": None} in r["expr"]]
    assert len(masq) == 1 and masq[0]["chain"] == "nat-corral0"
    assert masq[0]["expr"][1]["match"] == {
        "op": "!=",
        "left": {"payload": {"protocol": "ip", "field": "daddr"}},
        "right": {"prefix": {"addr": "10.210.0.0", "len": 24}},
    }
    # nothing in it flushes or deletes anything but this network's own chains
    for command in doc:
        for verb in ("flush", "delete"):
            if verb in command:
                assert command[verb]["chain"]["name"] in ("fwd-corral0", "nat-corral0")


ROUTES: list[dict[str, Any]] = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0", "prefsrc": "192.0.2.10"},
    {"dst": "10.210.0.0/24", "dev": "corral0", "prefsrc": "10.210.0.1"},
    {"type": "local", "dst": "10.210.0.1", "dev": "corral0", "table": "local"},
    {"dst": "10.50.0.0/16", "dev": "other0"},
    {"type": "blackhole", "dst": "10.60.0.0/24"},
    {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local"},
]


@pytest.mark.parametrize(
    ("subnet", "bridge", "hits"),
    [
        ("10.210.0.0/24", "corral0", 0),  # its own bridge: fine
        ("10.210.0.0/24", "corral1", 2),  # someone else's bridge has it
        ("192.0.2.0/24", "corral0", 1),  # the uplink
        ("192.0.2.128/25", "corral0", 1),
        ("192.0.0.0/16", "corral0", 1),  # contains the uplink
        ("10.50.3.0/24", "corral0", 1),
        ("10.60.0.0/25", "corral0", 1),  # a blackhole route counts
        ("10.211.0.0/24", "corral0", 0),  # the default route does not count
    ],
)
def test_route_overlap_logic(subnet: str, bridge: str, hits: int) -> None:
    assert len(find_overlaps(subnet, bridge, ROUTES)) == hits


def test_address_overlap_logic() -> None:
    addrs = [
        {"ifname": "dummy0", "addr_info": [
            {"family": "inet", "local": "10.70.0.5", "prefixlen": 24}]},
        {"ifname": "corral0", "addr_info": [
            {"family": "inet", "local": "10.210.0.1", "prefixlen": 24}]},
    ]
    assert find_overlaps("10.70.0.0/16", "corral0", [], addrs) == ["address 10.70.0.5/24 on dummy0"]
    assert find_overlaps("10.210.0.0/24", "corral0", [], addrs) == []


def test_missing_tool_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cmd, "_SBIN", ())
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Unavailable) as info:
        _cmd.which("dnsmasq")
    assert "apt-get install dnsmasq-base" in info.value.message
    assert info.value.status == 503


# -- modes, backends, VLAN, overlay --------------------------------------------------------

BRIDGED = spec(mode="bridge", subnet=None, gateway=None, dhcp_start=None, dhcp_end=None,
               dns_domain=None, bridge="br0")


def test_layouts_name_their_devices() -> None:
    tag = spec().tag
    assert len(tag) == 8 and tag == spec(bridge="other").tag  # from the name alone
    assert (GOOD.l3_device, GOOD.port_bridge, GOOD.port_vlan) == ("corral0", "corral0", None)
    lb = spec(vlan=30, bridge="cr-trunk")
    assert lb.l3_device == lb.port_bridge == f"crb{tag}"
    assert lb.veth_pair == (f"crv{tag}", f"crt{tag}") and lb.port_vlan is None
    ovs = spec(vlan=30, bridge="cr-ovs", backend="ovs")
    assert (ovs.l3_device, ovs.port_bridge, ovs.port_vlan) == (f"crg{tag}", "cr-ovs", 30)
    assert (BRIDGED.l3_device, BRIDGED.port_bridge, BRIDGED.managed) == (None, "br0", False)
    over = spec(vni=5001, peers=["10.9.0.2"], serve=False)
    assert (over.vxlan_device, over.mtu, over.serves, GOOD.mtu) == ("crx5001", 1450, False, None)
    assert (spec(nat=False).kind, spec(nat=False, mode="isolated").kind) == ("routed", "isolated")
    for good in (BRIDGED, lb, ovs, over, spec(vni=1, local="10.9.0.1", peers=("10.9.0.2",)),
                 spec(mode="isolated"), spec(mode="routed"), spec(vlan=4094), spec(vni=16777215)):
        validate_spec(good)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"mode": "bridged"}, "mode"),
        ({"backend": "vpp"}, "backend"),
        ({"vlan": 0}, "vlan"),
        ({"vlan": 4095}, "vlan"),
        ({"vlan": True}, "vlan"),
        ({"vlan": "10"}, "vlan"),
        ({"vni": 0}, "vni"),
        ({"vni": 1 << 24}, "vni"),
        ({"vni": 5, "local": "10.9.0.300"}, "local"),
        ({"vni": 5, "peers": ["10.9.0.2", "10.9.0.2"]}, "peers"),
        ({"vni": 5, "local": "10.9.0.2", "peers": ["10.9.0.2"]}, "peers"),
        ({"vni": 5, "peers": ["127.0.0.1"]}, "peers"),
        ({"vni": 5, "peers": ["10.9.0.2\\nx"]}, "peers"),
        ({"vni": 5, "peers": "10.9.0.2"}, "peers"),
        ({"peers": ["10.9.0.2"]}, "peers"),  # peers without an overlay
        ({"serve": False}, "serve"),  # only overlay networks are served elsewhere
        ({"bridge": "crb0123abcd"}, "bridge"),  # corral's own device names
        ({"bridge": "crx5001"}, "bridge"),
    ],
)
def test_bad_layout_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_spec(spec(**changes))
    assert info.value.field == field


@pytest.mark.parametrize("field", ["subnet", "gateway", "dhcp_start", "dhcp_end", "dns_domain"])
def test_bridge_mode_takes_no_addresses(field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_spec(BRIDGED.model_copy(update={field: getattr(GOOD, field)}))
    assert info.value.field == field
    with pytest.raises(InvalidInput) as info:
        validate_spec(BRIDGED.model_copy(update={"vni": 5}))
    assert info.value.field == "vni"


def test_isolated_and_routed_rules() -> None:
    iso = spec(mode="isolated")
    doc = nat.render_ruleset(iso)["nftables"]
    chains = [c["add"]["chain"]["name"] for c in doc if "chain" in c.get("add", {})]
    assert chains == ["fwd-corral0"]  # no NAT chain
    rules = [c["add"]["rule"]["expr"] for c in doc if "rule" in c.get("add", {})]
    assert len(rules) == 2 and all(r[-1] == {"drop": None} for r in rules)
    # in X and out not X (or the reverse): bridged traffic within the network never matches
    assert [(r[0]["match"]["op"], r[1]["match"]["op"]) for r in rules] == [("==", "!="),
                                                                           ("==", "!=")]
    assert nat.wanted_chains(spec(mode="routed")) == () == nat.wanted_chains(BRIDGED)
    vlan = spec(mode="isolated", vlan=7, backend="ovs", bridge="cr-ovs")
    assert {"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                      "right": vlan.l3_device}} in [
        e for c in nat.render_ruleset(vlan)["nftables"] if "rule" in c.get("add", {})
        for e in c["add"]["rule"]["expr"]]
    natted = [c["add"]["rule"]["expr"] for c in nat.render_ruleset(GOOD)["nftables"]
              if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == "fwd-corral0"]
    assert natted[-1][-1] == {"drop": None}  # new connections in are refused


def test_dnsmasq_serves_the_gateway_device(tmp_path: Path) -> None:
    ovs = spec(vlan=30, bridge="cr-ovs", backend="ovs", vni=9)
    lines = dnsmasq.render_config(ovs, dnsmasq.Paths.of(ovs, tmp_path)).splitlines()
    assert f"interface={ovs.l3_device}" in lines
    assert "dhcp-option=option:mtu,1450" in lines


def test_chains_are_named_by_device_and_older_names_are_replaced() -> None:
    # Two nodes on one machine may both have a network "default", never the same bridge.
    other = spec(bridge="crlbench0")
    assert set(nat.chain_names(GOOD)).isdisjoint(nat.chain_names(other))
    rule_on = {"rule": {"chain": "fwd-default", "comment": "corral:default", "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "corral0"}},
        {"accept": None}]}}
    # an older corral's chain on our device is ours to replace; on another device it is not
    assert nat._legacy_chains(GOOD, [rule_on]) == {"fwd-default"}
    assert nat._legacy_chains(other, [rule_on]) == set()
