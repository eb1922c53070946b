"""VXLAN overlay of a network: one L2 segment over the hosts' underlay (UDP 4789).

Each host has one VXLAN device per overlay network, ``crx<VNI>``, on the network's own
segment (its bridge; with OVS a port tagged like the guests), and in that device's
forwarding table one all-zeros entry per remote host: broadcast and unknown unicast go to
every peer (head-end replication), learned MACs go to the peer they came from. The kernel
does the encapsulation for both backends (OVS's userspace datapath would need the underlay
address on an OVS bridge for its own tunnels; a kernel VXLAN device is an ordinary port).
The peers come from the engine; ``ensure`` adds missing entries and removes stale ones.
"""

from __future__ import annotations

import ipaddress
import logging

from corral.agent.network import _cmd
from corral.agent.network import bridge as linux
from corral.agent_api.networks import VXLAN_MTU, VXLAN_PORT, NetworkSpec
from corral.errors import HostError

log = logging.getLogger(__name__)
ZERO_MAC = "00:00:00:00:00:00"


def _matches(spec: NetworkSpec, info: dict[str, object]) -> bool:
    data = info.get("linkinfo", {})
    data = data.get("info_data", {}) if isinstance(data, dict) else {}
    assert isinstance(data, dict)
    return (data.get("id") == spec.vni and data.get("port") == VXLAN_PORT
            and data.get("local") == spec.local)


def ensure_device(spec: NetworkSpec) -> bool:
    """Create the VXLAN device (re-create it if its VNI, port or local address changed).

    True when it was created now. Attaching it to the bridge is the caller's job.
    """
    name = spec.vxlan_device
    assert name is not None and spec.vni is not None
    info = linux.check_kind(name, "vxlan", "vni")
    if info is not None and not _matches(spec, info):
        linux.delete_link(name, "vxlan")
        info = None
    created = info is None
    if created:
        argv = ["ip", "link", "add", name, "mtu", str(VXLAN_MTU), "type", "vxlan",
                "id", str(spec.vni), "dstport", str(VXLAN_PORT)]
        if spec.local:
            argv += ["local", spec.local]
        _cmd.run(argv)
        log.info("network %s: created VXLAN %s (VNI %d)", spec.name, name, spec.vni)
    _cmd.run(["ip", "link", "set", "dev", name, "up"])
    return created


def fdb_peers(device: str) -> set[str]:
    """The remote hosts in the device's all-zeros (flood) entries."""
    entries = _cmd.run_json(["bridge", "-j", "fdb", "show", "dev", device])
    return {str(e["dst"]) for e in entries if e.get("mac") == ZERO_MAC and e.get("dst")}


def sync_peers(spec: NetworkSpec) -> None:
    """Exactly one flood entry per peer of the spec."""
    name = spec.vxlan_device
    assert name is not None
    wanted = {str(ipaddress.IPv4Address(p)) for p in spec.peers}
    present = fdb_peers(name)
    for peer in sorted(wanted - present):
        _cmd.run(["bridge", "fdb", "append", ZERO_MAC, "dev", name, "dst", peer])
    for peer in sorted(present - wanted):
        _cmd.run(["bridge", "fdb", "del", ZERO_MAC, "dev", name, "dst", peer])


def delete(spec: NetworkSpec) -> bool:
    name = spec.vxlan_device
    return False if name is None else linux.delete_link(name, "vxlan")


def status(spec: NetworkSpec) -> bool:
    """The device exists, is up, and floods to exactly the spec's peers."""
    name = spec.vxlan_device
    if name is None:
        return False
    info = linux.link(name)
    if info is None or linux.kind(info) != "vxlan" or not linux.is_up(info):
        return False
    try:
        return fdb_peers(name) == {str(ipaddress.IPv4Address(p)) for p in spec.peers}
    except HostError:
        return False
