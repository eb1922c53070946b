"""MAC/IP anti-spoofing on an Open vSwitch network, on a real node with real guests.

Two tiny guests (128 MiB, TCG) on one OVS network (userspace datapath, 10.210.198.0/24,
inside the node's lab host) get DHCP leases and reach each other: their addresses were
learned by dnsmasq's script into OpenFlow flows, since the flows the agent installs at
start know no lease yet. A source address that is not A's (added by hand in the guest)
gets no answer from B nor from the gateway, and A's port's drop flow counts the packets,
while A's own address still works. ``ovs-ofctl dump-flows`` shows each port's flows under
its cookie (``0xc000`` + MAC), the ports are not in nftables, and once the VMs are deleted
no flow with their cookies remains. Everything is deleted in ``finally``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from nodeutil import Node, wait_for
from storageutil import guest_sh, traversable

from corral.agent.network.firewall import SgTables
from corral.node.paths import NodePaths

pytestmark = pytest.mark.integration

NET, SUBNET, GATEWAY = "ovs-as", "10.210.198.0/24", "10.210.198.1"
VM_A, VM_B = "oas-a", "oas-b"


def _ip(node: Node, vm: str) -> str:
    found: list[str] = []

    def got() -> bool:
        found[:] = re.findall(r"CORRAL-TINY-IP eth0 (\d+\.\d+\.\d+\.\d+)/",
                              node.console_log(vm))
        return bool(found)

    wait_for(f"{vm}'s address", got, timeout=120)
    return found[-1]


def _pings(node: Node, vm: str, target: str, source: str | None = None) -> bool:
    via = f"-I {source} " if source else ""
    return guest_sh(node, vm, f"ping -c 2 -W 2 {via}{target} >/dev/null 2>&1 && echo yes "
                    "|| echo no", timeout=40) == "yes"


def _mac(node: Node, vm: str) -> str:
    nics: Any = node.cli_json("vm", "nic", "list", vm)
    return str(nics[0]["mac"])


def _flows(node: Node, bridge: str, mac: str, stats: bool = False) -> list[str]:
    """The flows of the port with ``mac`` on ``bridge`` (by its cookie)."""
    cookie = "0xc000" + mac.replace(":", "")
    argv = ["ovs-ofctl", "dump-flows", bridge, f"cookie={cookie}/-1", "--names"]
    out = node.host.run(argv if stats else [*argv, "--no-stats"], timeout=30).stdout
    return [line.strip() for line in out.splitlines() if f"cookie={cookie}" in line]


def test_ovs_ports_drop_spoofed_sources_and_their_flows_go_with_the_vms(node: Node) -> None:
    traversable(node)
    bridge = ""
    try:
        node.cli("net", "create", NET, "--backend", "ovs", "--subnet", SUBNET)
        for vm in (VM_A, VM_B):
            node.cli("vm", "create", vm, "--image", "tiny", "--memory", "128M", "--network",
                     NET, "--start")
        ip_a, ip_b = _ip(node, VM_A), _ip(node, VM_B)  # booted: DHCP answered through OVS
        wait_for("A pings B", lambda: _pings(node, VM_A, ip_b), timeout=60)
        mac_a, mac_b = _mac(node, VM_A), _mac(node, VM_B)
        tap_a = "cv" + mac_a.replace(":", "")
        bridge = node.host.run(["ovs-vsctl", "--timeout=10", "port-to-br", tap_a],
                               timeout=30).stdout.strip()
        assert bridge
        for mac, ip in ((mac_a, ip_a), (mac_b, ip_b)):
            tap = "cv" + mac.replace(":", "")
            flows = _flows(node, bridge, mac)
            assert f"priority=90,in_port={tap} actions=drop" in " ".join(flows), flows
            assert any(f"priority=100,ip,in_port={tap},dl_src={mac},nw_src={ip} "
                       "actions=NORMAL" in f for f in flows), flows
            assert any(f"arp_spa={ip},arp_sha={mac}" in f for f in flows), flows
        sg_table = SgTables.for_state_dir(NodePaths(node.data_dir).agent_dir).bridge
        ports = node.host.run(["nft", "list", "set", "bridge", sg_table, "ports"],
                              check=False, timeout=30)
        assert tap_a not in ports.stdout  # OVS ports never reach nftables' hooks

        # a source address that is not A's gets nowhere; A's own does
        spoofed = ip_a.rsplit(".", 1)[0] + ".77"
        guest_sh(node, VM_A, f"ip addr add {spoofed}/24 dev eth0; echo added")
        assert not _pings(node, VM_A, ip_b, source=spoofed)
        assert not _pings(node, VM_A, GATEWAY, source=spoofed)  # nor the gateway
        assert _pings(node, VM_A, ip_b, source=ip_a)
        drop = [f for f in _flows(node, bridge, mac_a, stats=True) if "actions=drop" in f]
        packets = re.search(r"n_packets=(\d+)", drop[0]) if drop else None
        assert packets and int(packets.group(1)) > 0, drop
        guest_sh(node, VM_A, f"ip addr del {spoofed}/24 dev eth0; echo removed")

        for vm in (VM_A, VM_B):
            node.cli("vm", "delete", vm, "--force")
        assert _flows(node, bridge, mac_a) == [] and _flows(node, bridge, mac_b) == []
    finally:
        for vm in (VM_A, VM_B):
            node.cli("vm", "delete", vm, "--force", check=False)
        node.cli("net", "delete", NET, check=False)
