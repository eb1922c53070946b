"""MAC/IP anti-spoofing of ports on Open vSwitch networks: the OpenFlow flows (expected
text), the agent's choice between nftables and flows by the network's backend, the DHCP
script's OVS part (only MACs and dotted quads reach ovs-ofctl), and real flows on a real
OVS bridge in a private network namespace (installed, replaced, stale cookies removed)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.agent.network import firewall, ovs_flows
from corral.agent.network.firewall import OvsTools, Port, SgTables, dhcp_script
from corral.errors import NotFound

MAC = "52:54:00:aa:bb:cc"
TAP = "cv525400aabbcc"
C = "cookie=0xc000525400aabbcc"
HEAD = f"{C},priority=100,in_port={TAP},dl_src={MAC}"
SG = SgTables("corral-sg", "corral-sg")


def test_cookie_is_the_mac_under_a_corral_prefix() -> None:
    assert ovs_flows.cookie(MAC) == 0xC000525400AABBCC
    assert ovs_flows.cookie_text("52:54:00:00:00:01") == "0xc000525400000001"
    assert ovs_flows.cookie(MAC) & ovs_flows.COOKIE_MASK == 0xC000 << 48


def test_flows_of_an_ip_guarded_port() -> None:
    port = Port(tap=TAP, mac=MAC, ips=("10.210.0.10",), network="sw")
    assert ovs_flows.render(port, ["10.210.0.150", "10.210.0.10", "10.210.0.10"]) == [
        f"{HEAD},ip,nw_src=10.210.0.10,actions=NORMAL",
        f"{HEAD},arp,arp_sha={MAC},arp_spa=10.210.0.10,actions=NORMAL",
        f"{HEAD},ip,nw_src=10.210.0.150,actions=NORMAL",
        f"{HEAD},arp,arp_sha={MAC},arp_spa=10.210.0.150,actions=NORMAL",
        f"{HEAD},arp,arp_sha={MAC},arp_spa=0.0.0.0,actions=NORMAL",
        f"{HEAD},udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67,actions=NORMAL",
        f"{HEAD},ipv6,ipv6_src=fe80::/10,actions=NORMAL",
        f"{HEAD},ipv6,ipv6_src=::,actions=NORMAL",
        f"{C},priority=90,in_port={TAP},actions=drop",
    ]
    # no address yet: DHCP and ARP probes only
    assert [f for f in ovs_flows.render(port, []) if "nw_src=10" in f] == []


def test_flows_of_a_mac_only_port() -> None:
    port = Port(tap=TAP, mac=MAC, ip_guard=False, network="br-mode")
    assert ovs_flows.render(port, ["10.0.0.1"]) == [
        f"{HEAD},ip,actions=NORMAL",
        f"{HEAD},arp,arp_sha={MAC},actions=NORMAL",
        f"{HEAD},ipv6,actions=NORMAL",
        f"{C},priority=90,in_port={TAP},actions=drop",
    ]


def test_replace_script_deletes_the_cookie_first() -> None:
    port = Port(tap=TAP, mac=MAC, ip_guard=False)
    lines = ovs_flows.replace_script(port, []).splitlines()
    assert lines[0] == f"delete {C}/-1"
    assert lines[1:] == [f"add {f}" for f in ovs_flows.render(port, [])]


def test_ovs_ports_are_left_out_of_nftables(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    scripts: list[str] = []
    synced: list[list[str]] = []

    def run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if args[:2] == ["nft", "-f"]:
            scripts.append(str(kw.get("input", "")))
        return subprocess.CompletedProcess(args, 1, "", "")

    def sync(ports: list[Port], addresses: Any, paths: Any = None) -> list[str]:
        synced.append([p.tap for p in ports])
        assert addresses() == {p.tap: set(p.ips) for p in ports}
        return []

    monkeypatch.setattr(firewall._cmd, "run", run)
    monkeypatch.setattr(ovs_flows, "sync", sync)
    removed: list[str] = []
    monkeypatch.setattr(ovs_flows, "remove", lambda mac, paths=None: removed.append(mac))

    def on_ovs(net: str) -> bool:
        if net == "gone":
            raise NotFound("no such network")
        return net == "sw"

    fw = firewall.Firewall(tmp_path, lambda _net: [], on_ovs)
    lb = fw.apply(Port(tap="cv525400000001", mac="52:54:00:00:00:01", network="default"))
    ov = fw.apply(Port(tap=TAP, mac=MAC, ips=("10.210.30.5",), network="sw"))
    assert (lb.id, ov.id) == (1, 2)
    assert '"cv525400000001"' in scripts[-1] and TAP not in scripts[-1]
    assert synced == [[TAP]]  # only an OVS port's change syncs flows
    fw.apply(Port(tap="cv525400000002", mac="52:54:00:00:00:02", network="gone"))
    assert '"cv525400000002"' in scripts[-1]  # unknown network: nftables, as before
    fw.sync_ovs()
    assert synced[-1] == [TAP]
    assert fw.remove(TAP) and removed == ["525400aabbcc"]


def _fake_tools(tmp_path: Path, port_to_br: str = "cr-sw") -> tuple[OvsTools, Path]:
    log = tmp_path / "calls"
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "sock.py").write_text(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\n")
    subprocess.run([sys.executable, str(tmp_path / "sock.py"), str(run / "db.sock")],
                   check=True)
    tools = {}
    for name, body in (("nft", "true"), ("vsctl", f"echo '{port_to_br}'"),
                       ("ofctl", f'echo "$@" >> {log}; [ "$3" = - ] && cat >> {log}; true')):
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        tools[name] = str(path)
    return OvsTools(tools["vsctl"], tools["ofctl"], shutil.which("flock") or "flock",
                    str(run)), log


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock (util-linux)")
def test_dhcp_script_changes_flows_of_leased_addresses_only(tmp_path: Path) -> None:
    tools, log = _fake_tools(tmp_path)
    script = tmp_path / "learn.sh"
    script.write_text(dhcp_script(str(tmp_path / "nft"), SG, tools))
    script.chmod(0o755)
    for args in (["add", MAC, "10.210.30.150", "a"],
                 ["del", MAC, "10.210.30.150"],
                 ["add", f"{MAC}; reboot", "10.210.30.150"],
                 ["add", MAC, "10.0.0.1,actions=drop"],
                 ["add", MAC, "0.0.0.0"],
                 ["tftp", MAC, "10.210.30.150"]):
        subprocess.run([str(script), *args], check=True, timeout=20)
    mgmt = f"unix:{tools.rundir}/cr-sw.mgmt"
    assert log.read_text().splitlines() == [
        f"add-flows {mgmt} -",
        f"{HEAD},ip,nw_src=10.210.30.150,actions=NORMAL",
        f"{HEAD},arp,arp_sha={MAC},arp_spa=10.210.30.150,actions=NORMAL",
        f"del-flows {mgmt} {C}/-1,ip,nw_src=10.210.30.150",
        f"del-flows {mgmt} {C}/-1,arp,arp_spa=10.210.30.150",
    ]


def test_dhcp_script_ignores_taps_not_on_a_bridge_name(tmp_path: Path) -> None:
    tools, log = _fake_tools(tmp_path, port_to_br="x;reboot")
    script = tmp_path / "learn.sh"
    script.write_text(dhcp_script(str(tmp_path / "nft"), SG, tools))
    script.chmod(0o755)
    subprocess.run([str(script), "add", MAC, "10.210.30.150"], check=True, timeout=20)
    assert not log.exists()


_REAL = """
import json, os, subprocess
from corral.agent.network import ovs, ovs_flows
from corral.agent.network.firewall import Port
p = ovs.ensure_daemons()
env = {**os.environ, **p.env()}
def flows():
    out = subprocess.run(["ovs-ofctl", "dump-flows", "tbr", "--no-stats", "--names"],
                         capture_output=True, text=True, env=env, check=True).stdout
    return sorted(line.strip() for line in out.splitlines() if "cookie=0xc000" in line)
ovs.ensure_bridge(p, "tbr", None)
for tap in ("cv525400000001", "cv525400000002"):
    subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
a = Port(tap="cv525400000001", mac="52:54:00:00:00:01", ips=("10.9.0.5",), network="n")
b = Port(tap="cv525400000002", mac="52:54:00:00:00:02", ip_guard=False, network="n")
ovs.vsctl(p, "add-port", "tbr", a.tap)
result = {"first": ovs_flows.sync([a, b], lambda: {a.tap: {"10.9.0.5", "10.9.0.6"}}, p)}
result["flows1"] = flows()
ovs.vsctl(p, "add-port", "tbr", b.tap)
subprocess.run(["ovs-ofctl", "add-flow", "tbr",
                "cookie=0xc000525400000099,priority=90,in_port=1,actions=drop"],
               env=env, check=True)
result["second"] = ovs_flows.sync([a, b], lambda: {a.tap: {"10.9.0.5"}}, p)
result["flows2"] = flows()
ovs_flows.remove(a.mac, p)
result["flows3"] = flows()
print(json.dumps(result))
"""


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ovs-vswitchd") is None,
                    reason="needs unshare and Open vSwitch")
def test_real_flows_on_a_real_ovs_bridge(tmp_path: Path) -> None:
    env = {**os.environ, "OVS_RUNDIR": str(tmp_path / "r"), "OVS_DBDIR": str(tmp_path / "d"),
           "OVS_LOGDIR": str(tmp_path / "l"), "CORRAL_OVS_DATAPATH": "netdev"}
    try:
        proc = subprocess.run(["unshare", "-n", sys.executable, "-c", _REAL], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((tmp_path / "r" / f"{daemon}.pid").read_text()), signal.SIGTERM)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["first"] == ["cv525400000001"]  # b's tap is not on the bridge yet
    a_flows = [f for f in out["flows1"] if "0xc000525400000001" in f]
    assert len(a_flows) == len(out["flows1"]) == 9  # 2 addresses x 2 + 4 + drop
    assert any("nw_src=10.9.0.6" in f for f in a_flows)
    assert "cookie=0xc000525400000001, priority=90,in_port=cv525400000001 actions=drop" in \
        out["flows1"]
    assert out["second"] == ["cv525400000001", "cv525400000002"]
    assert not any("nw_src=10.9.0.6" in f or "0xc000525400000099" in f for f in out["flows2"])
    assert len([f for f in out["flows2"] if "0xc000525400000002" in f]) == 4
    assert out["flows3"] == [f for f in out["flows2"] if "0xc000525400000002" in f]
