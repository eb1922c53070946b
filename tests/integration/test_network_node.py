"""Networks on a real node, with real VMs: `corral net ...`, the API, libvirt, the tiny guest.

Guest-level tests: tiny VMs (128M, TCG) get their address by DHCP from the network's
dnsmasq and print it on the serial console; the test types commands on the console (the
API's WebSocket) and reads the answers from the console log. Everything lives in the node's
lab host (10.210.170.0/24 and up); nothing is sent anywhere else. Every VM and network a
test makes is deleted in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from nodeutil import Node, wait_for

pytestmark = pytest.mark.integration

IP_RE = re.compile(r"CORRAL-TINY-IP eth0 (\d+\.\d+\.\d+\.\d+)/")


def vm_ip(node: Node, vm: str) -> str:
    found: list[str] = []

    def got() -> bool:
        found[:] = IP_RE.findall(node.console_log(vm))
        return bool(found)

    wait_for(f"{vm}'s DHCP lease on its console", got, timeout=120)
    return found[-1]


def run_in_guest(node: Node, vm: str, command: str, timeout: float = 60) -> int:
    """Type ``command`` on the guest's serial console (the API's WebSocket); its exit status."""
    return node.console_run(vm, f"{command} >/dev/null 2>&1", timeout).status


def pings(node: Node, vm: str, address: str) -> bool:
    return run_in_guest(node, vm, f"ping -c 2 -W 2 {address}") == 0


def in_lab(node: Node, *argv: str) -> str:
    return node.host.run(list(argv), timeout=30).stdout


def lab_state(node: Node) -> tuple[list[str], list[str], list[str]]:
    """(Linux bridges, dnsmasq config files, nft chains of table inet corral) in the lab host."""
    bridges = sorted(x["ifname"] for x in json.loads(in_lab(node, "ip", "-j", "link", "show",
                                                          "type", "bridge") or "[]"))
    # one per network: dnsmasq's --dhcp-script helper is a second process of the same args
    dns = sorted({line.split("--conf-file=")[1] for line in in_lab(node, "ps", "-ww", "-eo",
                                                                   "args").splitlines()
                  if f"--conf-file={node.data_dir}/" in line})
    proc = node.host.run(["nft", "-j", "list", "table", "inet", "corral"], check=False)
    chains = sorted(i["chain"]["name"] for i in json.loads(proc.stdout)["nftables"]
                    if "chain" in i) if proc.returncode == 0 else []
    return bridges, dns, chains


@contextmanager
def cleanup(node: Node, vms: list[str], nets: list[str]) -> Iterator[None]:
    try:
        yield
    finally:
        for vm in vms:
            node.cli("vm", "delete", vm, "--force", check=False)
        for net in nets:
            node.cli("net", "delete", net, check=False)


def test_vms_on_two_isolated_networks_cannot_reach_each_other(node: Node) -> None:
    before = lab_state(node)
    with cleanup(node, ["iso-a1", "iso-b1"], ["iso-a", "iso-b"]):
        node.cli("net", "create", "iso-a", "--mode", "isolated", "--subnet", "10.210.171.0/24")
        node.cli("net", "create", "iso-b", "--mode", "isolated", "--subnet", "10.210.172.0/24",
                 "--dhcp-range", "10.210.172.50-10.210.172.60")
        shown: Any = node.cli_json("net", "show", "iso-b")
        assert (shown["mode"], shown["status"], shown["bridge"]) == ("isolated", "ready",
                                                                     "cr-iso-b")
        assert (shown["dhcp_start"], shown["dhcp_end"]) == ("10.210.172.50", "10.210.172.60")
        bridges, dns, _ = lab_state(node)
        assert {"cr-iso-a", "cr-iso-b"} <= set(bridges) and len(dns) == len(before[1]) + 2

        for vm, net in (("iso-a1", "iso-a"), ("iso-b1", "iso-b")):
            node.cli("vm", "create", vm, "--image", "tiny", "--memory", "128M",
                     "--network", net, "--start")
        ip_a, ip_b = vm_ip(node, "iso-a1"), vm_ip(node, "iso-b1")
        assert ip_a.startswith("10.210.171.") and ip_b.startswith("10.210.172.")
        assert 50 <= int(ip_b.rsplit(".", 1)[1]) <= 60
        assert [n["vms"] for n in node.cli_json("net", "list")  # type: ignore[union-attr]
                if n["name"] == "iso-a"] == [["iso-a1"]]

        assert pings(node, "iso-a1", "10.210.171.1")  # its own gateway answers
        assert not pings(node, "iso-a1", ip_b)
        assert not pings(node, "iso-b1", ip_a)

        refused = node.cli("net", "delete", "iso-a", check=False)
        assert refused.returncode == 2 and "used by VMs: iso-a1" in refused.stderr
    assert lab_state(node) == before  # bridges, dnsmasq and rules all went


def test_vlan_networks_on_open_vswitch(node: Node, tmp_path: Path) -> None:
    """Two VLAN networks on one OVS bridge (userspace datapath): libvirt tags each VM's port,
    so each VM's DHCP broadcast reaches only its own network's dnsmasq, and neither VM
    reaches the other; TCP from a VM through OVS carries data intact (2 MiB over HTTP from
    the gateway). Both survive an agent restart (OVS and dnsmasq outlive it)."""
    before = lab_state(node)
    with cleanup(node, ["ovs10", "ovs20"], ["ov10", "ov20"]):
        for net, vlan, octet in (("ov10", "10", 173), ("ov20", "20", 174)):
            node.cli("net", "create", net, "--backend", "ovs", "--vlan", vlan, "--mode",
                     "isolated", "--subnet", f"10.210.{octet}.0/24")
        vsctl = ["ovs-vsctl", "--timeout=10"]
        assert in_lab(node, *vsctl, "get", "bridge", "cr-ovs", "datapath_type").strip() == \
            "netdev"
        for vm, net in (("ovs10", "ov10"), ("ovs20", "ov20")):
            node.cli("vm", "create", vm, "--image", "tiny", "--memory", "128M",
                     "--network", net, "--start")
        xml = node.virsh("dumpxml", "ovs10")
        assert "<virtualport type='openvswitch'>" in xml and "<tag id='10'/>" in xml
        tap = re.search(r"<interface type='bridge'>.*?<target dev='([^']+)'", xml, re.S)
        assert tap and in_lab(node, *vsctl, "get", "port", tap.group(1), "tag").strip() == "10"

        ip10, ip20 = vm_ip(node, "ovs10"), vm_ip(node, "ovs20")
        assert ip10.startswith("10.210.173.") and ip20.startswith("10.210.174.")
        assert pings(node, "ovs10", "10.210.173.1")
        assert not pings(node, "ovs10", ip20) and not pings(node, "ovs20", ip10)

        blob = tmp_path / "blob"
        blob.write_bytes(os.urandom(2 << 20))
        tmp_path.chmod(0o755)
        server = node.host.popen([sys.executable, "-m", "http.server", "--bind", "10.210.173.1",
                                  "8080", "--directory", str(tmp_path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            fetch = ("sleep 1; timeout 60 wget -q -O /tmp/blob http://10.210.173.1:8080/blob && "
                     f"[ $(wc -c </tmp/blob) -eq {2 << 20} ] && rm /tmp/blob")
            assert run_in_guest(node, "ovs10", fetch, timeout=90) == 0
        finally:
            server.kill()
            server.wait(timeout=10)

        # an agent restart rebuilds nothing it does not need to: the same dnsmasq processes
        def dns_pids() -> list[str]:
            return [(node.data_dir / "agent" / "networks" / n / "dnsmasq.pid").read_text()
                    for n in ("ov10", "ov20")]
        dns_before = dns_pids()
        old = node.pid("agent")
        node.host.run(["kill", "-9", str(old)])
        wait_for("agent restarted", lambda: (node.data_dir / "agent.pid").exists()
                 and node.pid("agent") != old, timeout=30)
        wait_for("agent answers", lambda: node.cli("vm", "console", "ovs10", "--log",
                                                   check=False).returncode == 0, timeout=60)
        assert dns_pids() == dns_before
        assert pings(node, "ovs10", "10.210.173.1")
    assert lab_state(node) == before
    assert in_lab(node, "ovs-vsctl", "--timeout=10", "list-br").strip() == ""


def test_bad_network_input_is_refused_and_builds_nothing(node: Node) -> None:
    before = lab_state(node)
    listed = node.cli_json("net", "list")
    cases: list[tuple[list[str], int, str]] = [
        (["over", "--subnet", "10.210.0.0/25"], 2, "overlaps network default"),
        (["gw", "--subnet", "10.210.175.0/24", "--gateway", "10.210.176.1"], 2,
         "[gateway]: gateway 10.210.176.1 is outside the subnet"),
        (["cidr", "--subnet", "10.210.175.0/33"], 2, "[subnet]"),
        (["cidr2", "--subnet", "banana"], 2, "is not a CIDR"),
        (["longbr", "--bridge", "a-very-long-bridge"], 2, "longer than 15 characters"),
        (["range", "--dhcp-range", "10.210.175.9"], 2, "[dhcp_range]"),
        (["vl", "--vlan", "5000"], 2, "[vlan]"),
        (["joined", "--mode", "bridge", "--bridge", "nosuchbr0"], 2, "does not exist"),
        (["taken", "--bridge", "corral0"], 2, "belongs to network default"),
        (["default"], 2, "already exists"),
        # this kernel has no bridge VLAN filtering: a clear 503 naming the way out
        (["lbvlan", "--vlan", "30", "--subnet", "10.210.175.0/24"], 1, "use the ovs backend"),
    ]
    for args, code, words in cases:
        proc = node.cli("net", "create", *args, check=False)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        assert words in proc.stderr, (args, proc.stderr)
    # a routed network on a subnet a host route already covers: refused by the agent's check
    node.host.run(["ip", "route", "add", "blackhole", "10.210.179.0/24"])
    try:
        proc = node.cli("net", "create", "routed", "--mode", "routed", "--subnet",
                        "10.210.179.0/24", check=False)
        assert proc.returncode == 2 and "overlaps what this host already uses" in proc.stderr
    finally:
        node.host.run(["ip", "route", "del", "blackhole", "10.210.179.0/24"])
    assert node.cli_json("net", "list") == listed
    assert lab_state(node) == before
    refused = node.cli("net", "delete", "nosuch", check=False)
    assert refused.returncode == 2 and "not found" in refused.stderr


def test_networks_are_rebuilt_after_a_host_reboot(node: Node) -> None:
    """A reboot, as far as networks go: the agent, Open vSwitch and every dnsmasq die and the
    kernel's bridges are gone. The agent that comes back rebuilds them from its own records,
    and DHCP answers on them again (tested from inside the lab host)."""
    before = lab_state(node)
    with cleanup(node, [], ["boot-lb", "boot-ovs"]):
        node.cli("net", "create", "boot-lb", "--subnet", "10.210.176.0/24")
        node.cli("net", "create", "boot-ovs", "--backend", "ovs", "--subnet", "10.210.177.0/24")
        nets = node.data_dir / "agent" / "networks"
        ovs_run = node.host.root_dir / "run" / "openvswitch"
        victims = [int((nets / n / "dnsmasq.pid").read_text()) for n in ("boot-lb", "boot-ovs")]
        victims += [int((ovs_run / f"{d}.pid").read_text()) for d in ("ovs-vswitchd",
                                                                     "ovsdb-server")]
        old_agent = node.pid("agent")
        node.host.run(["kill", "-9", str(old_agent), *map(str, victims)])
        node.host.run(["ip", "link", "del", "cr-boot-lb"])
        for tap in ("cr-boot-ovs", "ovs-netdev"):  # the userspace datapath's taps die with it
            node.host.run(["ip", "link", "del", tap], check=False)
        wait_for("agent restarted", lambda: (node.data_dir / "agent.pid").exists()
                 and node.pid("agent") != old_agent, timeout=30)

        def rebuilt() -> bool:
            bridges, dns, _ = lab_state(node)
            return "cr-boot-lb" in bridges and len(dns) == len(before[1]) + 2
        wait_for("the networks rebuilt by the new agent", rebuilt, timeout=60)
        assert in_lab(node, "ovs-vsctl", "--timeout=10", "list-br").split() == ["cr-boot-ovs"]
        # DHCP answers on both, from a veth on each bridge inside the lab host
        for net, octet in (("boot-lb", 176), ("boot-ovs", 177)):
            node.host.run(["ip", "link", "add", "bc0", "type", "veth", "peer", "name", "bc1"])
            try:
                if net == "boot-ovs":
                    in_lab(node, "ovs-vsctl", "--timeout=10", "add-port", "cr-boot-ovs", "bc1")
                else:
                    node.host.run(["ip", "link", "set", "bc1", "master", "cr-boot-lb"])
                node.host.run(["ip", "link", "set", "bc1", "up"])
                node.host.run(["ip", "link", "set", "bc0", "up"])
                out = node.host.run(["busybox", "udhcpc", "-i", "bc0", "-n", "-q", "-t", "10",
                                     "-T", "1", "-s", "/bin/true"], timeout=60)
                assert f"lease of 10.210.{octet}." in out.stdout + out.stderr
            finally:
                if net == "boot-ovs":
                    node.host.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-port",
                                   "bc1"], check=False)
                node.host.run(["ip", "link", "del", "bc0"], check=False)
    assert lab_state(node) == before
