"""The agent's per-NIC rules (corral.agent.network.firewall): port validation, the rendered
nftables script (expected text, and accepted by the real nft in a private network namespace),
the dnsmasq lease script, and the interface's tap name and QoS in the designed XML."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from corral.agent.network import firewall
from corral.agent.network.firewall import Port, Rule, SgTables, dhcp_script, parse_port, render
from corral.domainxml import NicSpec, design_nic, tap_of
from corral.errors import InvalidInput
from corral.node.paths import DEFAULT_DATA_DIR, NodePaths

TAP_A, TAP_B = "cv525400aabbcc", "cv525400aabbdd"
SG = SgTables("corral-sg", "corral-sg")  # the default node's


def _a() -> Port:
    return replace(parse_port(TAP_A, {
        "mac": "52:54:00:AA:BB:CC", "ips": ["10.210.0.10"], "filtered": True,
        "network": "default",
        "rules": [
            {"direction": "egress", "protocol": "any"},
            {"direction": "ingress", "protocol": "tcp", "port_min": 22, "port_max": 22},
            {"direction": "ingress", "protocol": "udp", "port_min": 8000, "port_max": 8100,
             "cidrs": ["10.0.0.0/8", "192.168.1.0/24"]},
            {"direction": "ingress", "protocol": "icmp", "cidrs": ["10.210.0.7/32"]},
            {"direction": "ingress", "protocol": "tcp", "cidrs": []},  # empty remote group
        ]}), id=1)


def _b() -> Port:
    return replace(parse_port(TAP_B, {"mac": "52:54:00:aa:bb:dd", "ip_guard": False}), id=2)


def test_tap_names() -> None:
    assert tap_of("52:54:00:AA:BB:CC") == TAP_A
    assert len(TAP_A) <= 15


@pytest.mark.parametrize(
    ("tap", "body", "field"),
    [
        ("vnet0", {"mac": "52:54:00:aa:bb:cc"}, "tap"),
        ("cv525400aabbcc; drop", {"mac": "52:54:00:aa:bb:cc"}, "tap"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cd"}, "mac"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cc", "ips": ["10.0.0.300"]}, "ips"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cc", "ips": ["1.2.3.4 } ; flush ruleset"]}, "ips"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cc", "rules": [{"direction": "up"}]},
         "rules[0].direction"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cc", "rules": [{"direction": "ingress",
                                                         "protocol": "gre"}]},
         "rules[0].protocol"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cc", "rules": [
            {"direction": "ingress", "protocol": "tcp", "port_min": 9, "port_max": 8}]},
         "rules[0].port_min"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cc", "rules": [
            {"direction": "ingress", "protocol": "icmp", "port_min": 9}]}, "rules[0].port_min"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cc", "rules": [
            {"direction": "ingress", "cidrs": ["10.0.0.1/8"]}]}, "rules[0].cidrs"),
        (TAP_A, {"mac": "52:54:00:aa:bb:cc", "network": "a b"}, "network"),
    ],
)
def test_port_validation(tap: str, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_port(tap, body)
    assert info.value.field == field


def test_rendered_rules() -> None:
    text = render([_b(), _a()], {TAP_A: {"10.210.0.10", "10.210.0.99"}}, SG)
    lines = text.splitlines()
    # anti-spoofing, stateless, in the bridge family (both ports)
    for expected in (
        'add element bridge corral-sg ports { "cv525400aabbcc", "cv525400aabbdd" }',
        'add element bridge corral-sg port_mac { "cv525400aabbcc" . 52:54:00:aa:bb:cc, '
        '"cv525400aabbdd" . 52:54:00:aa:bb:dd }',
        'add element bridge corral-sg port_ip { "cv525400aabbcc" . 10.210.0.10 }',
        "add rule bridge corral-sg pre iifname != @ports accept",
        'add rule bridge corral-sg pre iifname "cv525400aabbcc" meta mark set meta mark | '
        "0x00000001",
        "add rule bridge corral-sg pre iifname . ether saddr != @port_mac drop",
        'add rule bridge corral-sg pre iifname { "cv525400aabbdd" } ether type { ip, arp, ip6 }'
        " accept",
        "add rule bridge corral-sg pre ether type ip iifname . ip saddr != @port_ip drop",
        'add rule bridge corral-sg mark_out oifname "cv525400aabbcc" meta mark set meta mark | '
        "0x00010000",
    ):
        assert expected in lines, expected
    assert "flush set bridge corral-sg port_ip" not in text  # learned addresses stay
    assert not any("cv525400aabbdd" in line and "mark" in line for line in lines)  # unfiltered
    start = lines.index("  chain i_cv525400aabbcc {")
    assert lines[start:start + 7] == [
        "  chain i_cv525400aabbcc {",
        "    udp sport 67 udp dport 68 return",
        "    meta l4proto ipv6-icmp return",
        "    meta nfproto ipv4 tcp dport 22 return",
        "    ip saddr { 10.0.0.0/8, 192.168.1.0/24 } udp dport 8000-8100 return",
        "    ip saddr 10.210.0.7/32 ip protocol icmp return",
        "    drop",
    ]
    start = lines.index("  chain o_cv525400aabbcc {")
    assert lines[start + 3:start + 5] == ["    meta nfproto ipv4 return", "    drop"]
    assert ("  map addr_in { type ipv4_addr : verdict; elements = { 10.210.0.10 : jump "
            "i_cv525400aabbcc, 10.210.0.99 : jump i_cv525400aabbcc }; }") in lines
    assert "    meta mark & 0x0000ffff vmap @out_by_port" in lines
    assert "    meta mark >> 16 vmap @in_by_port" in lines


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("nft") is None,
                    reason="needs unshare and nft")
def test_real_nft_accepts_the_script_twice(tmp_path: Path) -> None:
    """In a private network namespace: the script applies, and applies again (idempotent:
    `add` of what exists, the inet table replaced); an empty host is fine too."""
    script = tmp_path / "rules.nft"
    other = SgTables.for_state_dir(tmp_path)
    script.write_text(render([_a(), _b()], {TAP_A: {"10.210.0.10"}}, SG) + render([], {}, SG)
                      + render([_b()], {}, other))
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"nft -f {script} && nft -f {script} && nft list ruleset"],
        capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "table inet corral-sg {" in proc.stdout
    assert f"table bridge {other.bridge} {{" in proc.stdout  # a second node's, beside it


def test_dhcp_script_passes_only_macs_and_addresses(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    fake_nft = tmp_path / "nft"
    fake_nft.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake_nft.chmod(0o755)
    script = tmp_path / "learn.sh"
    script.write_text(dhcp_script(str(fake_nft), SgTables("corral-sg", "corral-sg-0123abcd")))
    script.chmod(0o755)
    for args in (["add", "52:54:00:aa:bb:cc", "10.210.0.150", "a"],
                 ["old", "52:54:00:aa:bb:cc", "10.210.0.150"],
                 ["del", "52:54:00:aa:bb:cc", "10.210.0.150"],
                 ["add", "52:54:00:aa:bb:cc; reboot", "10.210.0.150"],
                 ["add", "52:54:00:aa:bb:cc", "10.0.0.1 } ; flush ruleset"],
                 ["tftp", "52:54:00:aa:bb:cc", "10.210.0.150"]):
        subprocess.run([str(script), *args], check=True, timeout=10)
    assert log.read_text().splitlines() == [
        'add element bridge corral-sg port_ip { "cv525400aabbcc" . 10.210.0.150 }',
        "add element inet corral-sg-0123abcd addr_in { 10.210.0.150 : jump i_cv525400aabbcc }",
    ] * 2 + [
        'delete element bridge corral-sg port_ip { "cv525400aabbcc" . 10.210.0.150 }',
        "delete element inet corral-sg-0123abcd addr_in "
        "{ 10.210.0.150 : jump i_cv525400aabbcc }",
    ]


def test_designed_interface_has_tap_and_bandwidth() -> None:
    xml = design_nic(NicSpec(mac="52:54:00:aa:bb:cc", bridge="corral0", target=TAP_A,
                             inbound_kbps=1000, outbound_kbps=125)).to_xml()
    assert f'<target dev="{TAP_A}"/>' in xml
    assert '<inbound average="1000"/>' in xml and '<outbound average="125"/>' in xml
    for bad, field in ((dict(target="vnet3"), "nic.target"),
                       (dict(target="x" * 16), "nic.target"),
                       (dict(inbound_kbps=0), "nic.inbound_kbps"),
                       (dict(outbound_kbps=2**32), "nic.outbound_kbps")):
        with pytest.raises(InvalidInput) as info:
            design_nic(NicSpec(mac="52:54:00:aa:bb:cc", bridge="corral0", **bad))
        assert info.value.field == field


def test_rule_defaults() -> None:
    assert Rule("ingress").cidrs == ("0.0.0.0/0",)


def test_qos_policing_rules() -> None:
    """Where libvirt's <bandwidth> cannot work (no sfq, no police action), the port's rates
    are policed on the tap: from the guest in prerouting, to it in postrouting."""
    port = replace(parse_port(TAP_B, {"mac": "52:54:00:aa:bb:dd", "inbound_kbps": 128,
                                      "outbound_kbps": 64}), id=3)
    lines = render([port], {}, SG).splitlines()
    assert ('add rule bridge corral-sg pre iifname "cv525400aabbdd" limit rate over 64 '
            "kbytes/second burst 64 kbytes drop") in lines
    assert ('add rule bridge corral-sg qos_in oifname "cv525400aabbdd" limit rate over 128 '
            "kbytes/second burst 128 kbytes drop") in lines
    assert "limit" not in render([_b()], {}, SG)
    for bad in (0, -1, 2**32, True, "9"):
        with pytest.raises(InvalidInput) as info:
            parse_port(TAP_B, {"mac": "52:54:00:aa:bb:dd", "inbound_kbps": bad})
        assert info.value.field == "inbound_kbps"


def test_each_state_dir_has_its_own_tables(tmp_path: Path) -> None:
    """The default node keeps ``corral-sg``; two other state dirs get disjoint names, the same
    for every spelling of a dir (the agent, its dnsmasq script and purge must agree)."""
    assert SgTables.for_state_dir(NodePaths(DEFAULT_DATA_DIR).agent_dir) == SG
    a = SgTables.for_state_dir(tmp_path / "a" / "agent")
    b = SgTables.for_state_dir(tmp_path / "b" / "agent")
    names = {a.bridge, a.inet} | {b.bridge, b.inet}
    assert not {a.bridge, a.inet} & {b.bridge, b.inet} and "corral-sg" not in names
    assert all(re.fullmatch(r"corral-sg-[0-9a-f]{8}", n) for n in names)
    assert SgTables.for_state_dir(tmp_path / "b" / ".." / "a" / "agent") == a
    text = render([_a()], {}, a)
    assert f"add rule bridge {a.bridge} pre iifname != @ports accept" in text
    assert f"table inet {a.inet} {{" in text and "corral-sg " not in text


def test_port_ids_avoid_other_nodes_marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Marks are one space for the host: a new port takes an id no other node's table uses,
    and a port whose stored id another node took meanwhile moves (its file too)."""
    other = {"nftables": [{"metainfo": {}}, {"table": {"family": "inet", "name": "corral-sg"}},
                          {"table": {"family": "inet", "name": "firewalld"}}]}
    used = {"nftables": [{"map": {"name": "out_by_port", "table": "corral-sg", "elem": [
        [1, {"jump": {"target": "o_cv525400000001"}}],
        [3, {"jump": {"target": "o_cv525400000003"}}]]}}]}
    scripts: list[str] = []
    asked: list[list[str]] = []

    def run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        asked.append(args)
        if args == ["nft", "-j", "list", "tables", "inet"]:
            return subprocess.CompletedProcess(args, 0, json.dumps(other), "")
        if args == ["nft", "-j", "list", "map", "inet", "corral-sg", "out_by_port"]:
            return subprocess.CompletedProcess(args, 0, json.dumps(used), "")
        if args[:2] == ["nft", "-f"]:
            scripts.append(str(kw.get("input", "")))
            return subprocess.CompletedProcess(args, 0, "", "")
        return subprocess.CompletedProcess(args, 1, "", "")

    monkeypatch.setattr(firewall._cmd, "run", run)
    monkeypatch.setattr(firewall, "_enable_br_netfilter", lambda: None)
    fw = firewall.Firewall(tmp_path / "agent" / "ports")
    assert fw.tables == SgTables.for_state_dir(tmp_path / "agent") != SG
    assert fw.apply(replace(_b(), id=0)).id == 2
    assert fw.apply(replace(_a(), id=0)).id == 4
    assert not any("firewalld" in a for a in asked)  # only corral's tables are read
    assert f"table inet {fw.tables.inet} {{" in scripts[-1]
    (tmp_path / "agent" / "ports" / f"{TAP_B}.json").write_text(
        json.dumps(firewall.port_body(replace(_b(), id=3))))  # as if chosen alone
    fw.restore()
    assert {p.tap: p.id for p in fw.ports()} == {TAP_A: 4, TAP_B: 2}
