"""Linux bridges, veth pairs and addresses of a network, with iproute2.

A device is created only when missing and deleted only when it is of the kind corral made
(``ip -d link`` ``info_kind``): an interface of that name of another kind (eth0, a veth
someone else made) is never taken over or removed. Bridges carry the node they belong to
(``owner``): another node's bridge is never taken over either.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

from corral.agent.network import _cmd
from corral.agent.network import owner as ownership
from corral.agent_api.networks import NetworkSpec, parse_subnet
from corral.errors import Conflict, HostError, Unavailable

log = logging.getLogger(__name__)


def link(name: str) -> dict[str, Any] | None:
    """``ip -j -d link show dev NAME`` as a dict, or None when there is no such interface."""
    proc = _cmd.run(["ip", "-j", "-d", "link", "show", "dev", name], check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            return None
        raise HostError(
            f"`ip link show dev {name}` failed: {proc.stderr.strip()}",
            command=["ip", "link", "show", "dev", name],
        )
    links = json.loads(proc.stdout or "[]")
    return links[0] if links else None


def kind(info: dict[str, Any] | None) -> str | None:
    """``bridge``, ``veth``, ``vxlan``, ``tun``...; None for a missing or physical device."""
    if info is None:
        return None
    value = info.get("linkinfo", {}).get("info_kind")
    return str(value) if value else None


def is_bridge(info: dict[str, Any]) -> bool:
    return kind(info) == "bridge"


def is_up(info: dict[str, Any]) -> bool:
    """Administratively up (an empty bridge is up but has no carrier)."""
    return "UP" in info.get("flags", [])


def master(info: dict[str, Any] | None) -> str | None:
    return None if info is None else info.get("master")


def filters_vlans(info: dict[str, Any]) -> bool:
    return bool(info.get("linkinfo", {}).get("info_data", {}).get("vlan_filtering"))


def vlan_filtering_supported() -> bool | None:
    """Whether this kernel filters VLANs on bridges (a bridge shows ``vlan_filtering`` in
    sysfs); None when there is no bridge to tell."""
    for d in Path("/sys/class/net").glob("*/bridge"):
        return (d / "vlan_filtering").exists()
    return None


VLAN_UNSUPPORTED = (
    "this host's kernel cannot filter VLANs on Linux bridges (it lacks "
    "CONFIG_BRIDGE_VLAN_FILTERING, which needs 802.1Q support); use the ovs backend for "
    "VLAN networks here"
)


def check_kind(name: str, wanted: str, field: str = "bridge") -> dict[str, Any] | None:
    """The link ``name`` if it is missing or of kind ``wanted``; ``Conflict`` otherwise."""
    info = link(name)
    if info is not None and kind(info) != wanted:
        found = kind(info) or "physical or unknown"
        raise Conflict(
            f"interface {name!r} exists and is not a {wanted} (it is {found}); "
            f"choose another {field} name",
            field=field,
        )
    return info


def bridge_mac(spec: NetworkSpec) -> str:
    """A fixed, locally administered MAC derived from the network name.

    A bridge without an address of its own takes the lowest MAC of its ports, so the
    gateway's MAC would change as guests come and go (stale ARP caches in the guests).
    """
    return mac_of(f"corral-network:{spec.name}")


def mac_of(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, 0xC0, *digest[:4]))


def ensure_bridge(name: str, mac: str | None, *, owner: str | None = None,
                  vlan_filtering: bool = False) -> bool:
    """Create (if missing) and bring up a Linux bridge. True when it was created now.

    ``owner``: the node (``owner.owner_of``) the bridge is for: one that carries another
    node's alias is refused (``Conflict``), one without an alias is stamped with ours.

    ``vlan_filtering``: a trunk whose ports carry VLANs (``bridge vlan``); new ports join no
    VLAN until told (``vlan_default_pvid 0``). Kernels built without
    CONFIG_BRIDGE_VLAN_FILTERING (it needs 802.1Q support) refuse it: ``Unavailable``.
    """
    info = check_kind(name, "bridge")
    if owner is not None and (other := ownership.foreign(info, owner)) is not None:
        raise ownership.refusal(name, other)
    created = info is None
    if created:
        argv = ["ip", "link", "add", "name", name]
        if mac:
            argv += ["address", mac]
        argv += ["type", "bridge", "stp_state", "0", "forward_delay", "0"]
        if vlan_filtering:
            argv += ["vlan_filtering", "1", "vlan_default_pvid", "0"]
        proc = _cmd.run(argv, check=False)
        if proc.returncode != 0:
            if vlan_filtering and "not supported" in proc.stderr.lower():
                raise Unavailable(VLAN_UNSUPPORTED, field="vlan")
            raise HostError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}",
                            command=argv)
        log.info("created bridge %s%s", name, " (VLAN filtering)" if vlan_filtering else "")
    else:
        assert info is not None
        if vlan_filtering and not filters_vlans(info):
            raise Conflict(
                f"bridge {name} exists without VLAN filtering; enable it (`ip link set {name} "
                "type bridge vlan_filtering 1`) or choose another bridge for VLAN networks",
                field="bridge",
            )
        if mac and str(info.get("address", "")).lower() != mac:
            _cmd.run(["ip", "link", "set", "dev", name, "address", mac])
    if owner is not None and (created or ownership.needs_stamp(info)):
        ownership.stamp(name, owner)
    _cmd.run(["ip", "link", "set", "dev", name, "up"])
    return created


def ensure_veth_to_trunk(spec: NetworkSpec) -> bool:
    """linuxbridge + VLAN: the veth pair from the access bridge to the trunk, pvid VLAN.

    True when the pair was created now.
    """
    assert spec.vlan is not None
    inner, outer = spec.veth_pair
    info = check_kind(inner, "veth", "network")
    check_kind(outer, "veth", "network")
    created = info is None
    if created:
        _cmd.run(["ip", "link", "add", inner, "type", "veth", "peer", "name", outer])
    _cmd.run(["ip", "link", "set", "dev", inner, "master", spec.access_bridge, "up"])
    _cmd.run(["ip", "link", "set", "dev", outer, "master", spec.bridge, "up"])
    vid = str(spec.vlan)
    _cmd.run(["bridge", "vlan", "add", "dev", outer, "vid", vid, "pvid", "untagged"])
    # exactly this one VLAN on the trunk side
    for entry in _cmd.run_json(["bridge", "-j", "vlan", "show", "dev", outer]):
        for v in entry.get("vlans", []):
            if v.get("vlan") != spec.vlan:
                _cmd.run(["bridge", "vlan", "del", "dev", outer, "vid", str(v["vlan"])])
    return created


def ensure_address(dev: str, spec: NetworkSpec, *, fresh: bool = False) -> None:
    """``dev`` carries exactly the gateway address (IPv4) of the spec and is up.

    ``fresh``: the device was just made (and brought up) by this call: it has no address.
    """
    prefix = parse_subnet(spec.subnet).prefixlen
    wanted = ipaddress.IPv4Interface(f"{spec.gateway}/{prefix}")
    if fresh:
        _cmd.run(["ip", "addr", "add", str(wanted), "brd", "+", "dev", dev])
        return
    present = False
    for entry in _cmd.run_json(["ip", "-j", "-4", "addr", "show", "dev", dev]):
        for addr in entry.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            current = ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}")
            if current == wanted:
                present = True
            else:  # a stale gateway from an earlier spec of this network
                _cmd.run(["ip", "addr", "del", str(current), "dev", dev])
    if not present:
        _cmd.run(["ip", "addr", "add", str(wanted), "brd", "+", "dev", dev])
    _cmd.run(["ip", "link", "set", "dev", dev, "up"])


def delete_link(name: str, wanted: str) -> bool:
    """Delete ``name`` if it exists and is of kind ``wanted``. True when it was deleted."""
    info = link(name)
    if info is None or kind(info) != wanted:
        return False
    proc = _cmd.run(["ip", "link", "del", "dev", name], check=False)
    if proc.returncode != 0 and link(name) is not None:
        raise HostError(
            f"`ip link del dev {name}` failed: {proc.stderr.strip()}",
            command=["ip", "link", "del", "dev", name],
        )
    log.info("deleted %s %s", wanted, name)
    return True


def ports(bridge: str) -> list[str]:
    """The interfaces enslaved to a Linux bridge."""
    return [str(e["ifname"]) for e in _cmd.run_json(["ip", "-j", "link", "show", "master", bridge])]


def bridge_up(name: str) -> bool:
    info = link(name)
    return info is not None and is_bridge(info) and is_up(info)


def veth_status(spec: NetworkSpec) -> bool:
    inner, outer = spec.veth_pair
    return (master(link(inner)) == spec.access_bridge
            and master(link(outer)) == spec.bridge)
