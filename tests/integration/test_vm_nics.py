"""NICs of VMs on a real node: `corral vm nic add|list|remove` hot-plugs a second NIC, on
another network and with a static IP, into a running tiny guest.

What the user checks: libvirt's view (`virsh domiflist`), the guest's own view (its
/sys/class/net/eth1/address, read through the serial console), the guest's DHCP answer on
eth1 (`udhcpc -i eth1`, typed on the console: the reservation's address), the network's
leases and reservations (`net leases`, `net show`) and `vm ip`; then the unplug. Everything
lives in the node's lab host (10.210.191.0/24); the VM and network are deleted in finally.
"""

from __future__ import annotations

from typing import Any

import pytest
from nodeutil import Node, wait_for
from storageutil import guest_sh, running_vm

pytestmark = pytest.mark.integration

MAC = "52:54:00:1e:91:0a"
STATIC = "10.210.191.10"


def _iflist(node: Node, vm: str) -> dict[str, str]:
    """MAC -> source bridge of the running domain (`virsh domiflist`)."""
    out: dict[str, str] = {}
    for line in node.virsh("domiflist", vm).splitlines()[2:]:
        cols = line.split()
        if len(cols) >= 5:
            out[cols[4].lower()] = cols[2]
    return out


def test_hot_plugged_nic_with_a_static_lease(node: Node) -> None:
    try:
        node.cli("net", "create", "ni-back", "--mode", "isolated", "--subnet", "10.210.191.0/24")
        with running_vm(node, "ni-vm") as vm:
            first = node.cli_json("vm", "nic", "list", vm)
            assert isinstance(first, list) and len(first) == 1 and first[0]["primary"]

            # refused at the edge, nothing plugged
            bad = node.cli("vm", "nic", "add", vm, "--network", "ni-back", "--ip",
                           "10.210.191.200", check=False)  # inside the dynamic range
            assert bad.returncode != 0 and "dynamic DHCP range" in bad.stderr
            assert len(_iflist(node, vm)) == 1

            node.cli("vm", "nic", "add", vm, "--network", "ni-back", "--mac", MAC, "--ip", STATIC)
            nics: Any = node.cli_json("vm", "nic", "list", vm)
            assert [(n["index"], n["network"], n["ip"], n["status"]) for n in nics][1] == \
                (1, "ni-back", STATIC, "ready")
            assert _iflist(node, vm)[MAC] == "cr-ni-back"

            # the guest sees the new NIC: PCIe hot-plug, no reboot
            wait_for("eth1 in the guest", lambda: guest_sh(
                node, vm, "cat /sys/class/net/eth1/address 2>/dev/null || echo none") == MAC,
                timeout=60)
            # and gets the reserved address by DHCP on it
            guest_sh(node, vm, "udhcpc -i eth1 -s /etc/udhcpc/default.script -q -n -t 5 -T 2"
                     " >/dev/null 2>&1; echo done", timeout=60)
            assert f"CORRAL-TINY-IP eth1 {STATIC}/24" in node.console_log(vm)
            leases: Any = node.cli_json("net", "leases", "ni-back")
            assert [(x["mac"], x["ip"]) for x in leases] == [(MAC, STATIC)]
            shown: Any = node.cli_json("net", "show", "ni-back")
            assert shown["reservations"] == [{"mac": MAC, "ip": STATIC, "vm": vm}]
            assert shown["vms"] == [vm]
            ips: Any = node.cli_json("vm", "ip", vm)
            assert {(a["ip"], a["mac"]) for a in ips} >= {(STATIC, MAC)}

            # an address is one NIC's
            dup = node.cli("vm", "nic", "add", vm, "--network", "ni-back", "--ip", STATIC,
                           check=False)
            assert dup.returncode != 0 and "already VM ni-vm" in dup.stderr

            node.cli("vm", "nic", "remove", vm, "--mac", MAC)
            assert MAC not in _iflist(node, vm)
            wait_for("eth1 gone from the guest", lambda: guest_sh(
                node, vm, "cat /sys/class/net/eth1/address 2>/dev/null || echo none") == "none",
                timeout=60)
            assert node.cli_json("net", "show", "ni-back")["reservations"] == []  # type: ignore[index]
            assert len(node.cli_json("vm", "nic", "list", vm)) == 1  # type: ignore[arg-type]
        assert node.cli_json("net", "show", "ni-back")["vms"] == []  # type: ignore[index]
    finally:
        node.cli("vm", "delete", "ni-vm", "--force", check=False)
        node.cli("net", "delete", "ni-back", check=False)
