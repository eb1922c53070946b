"""The Linux bridge of a network: created with iproute2, carrying the gateway address."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from typing import Any

from corral.agent.network import _cmd
from corral.agent.network.spec import NetworkSpec, parse_subnet
from corral.errors import Conflict, HostError

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


def is_bridge(info: dict[str, Any]) -> bool:
    return bool(info.get("linkinfo", {}).get("info_kind") == "bridge")


def is_up(info: dict[str, Any]) -> bool:
    """Administratively up (an empty bridge is up but has no carrier)."""
    return "UP" in info.get("flags", [])


def check_is_ours(spec: NetworkSpec, info: dict[str, Any] | None) -> None:
    """Refuse to take over an interface of that name that is not a bridge (eth0, a veth...)."""
    if info is not None and not is_bridge(info):
        kind = info.get("linkinfo", {}).get("info_kind") or "physical or unknown"
        raise Conflict(
            f"interface {spec.bridge!r} exists and is not a bridge (it is {kind}); "
            "choose another bridge name",
            field="bridge",
        )


def bridge_mac(spec: NetworkSpec) -> str:
    """A fixed, locally administered MAC derived from the network name.

    A bridge without an address of its own takes the lowest MAC of its ports, so the
    gateway's MAC would change as guests come and go (stale ARP caches in the guests).
    """
    digest = hashlib.sha256(f"corral-network:{spec.name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, 0xC0, *digest[:4]))


def ensure(spec: NetworkSpec) -> bool:
    """Create (if missing), address and bring up the bridge. True when it was created now."""
    info = link(spec.bridge)
    check_is_ours(spec, info)
    created = info is None
    mac = bridge_mac(spec)
    if created:
        _cmd.run(
            ["ip", "link", "add", "name", spec.bridge, "address", mac, "type", "bridge",
             "stp_state", "0", "forward_delay", "0"]
        )
        log.info("network %s: created bridge %s", spec.name, spec.bridge)
    elif info is not None and str(info.get("address", "")).lower() != mac:
        _cmd.run(["ip", "link", "set", "dev", spec.bridge, "address", mac])
    _ensure_address(spec)
    _cmd.run(["ip", "link", "set", "dev", spec.bridge, "up"])
    return created


def _ensure_address(spec: NetworkSpec) -> None:
    """The bridge carries exactly the gateway address (IPv4) of the spec."""
    prefix = parse_subnet(spec.subnet).prefixlen
    wanted = ipaddress.IPv4Interface(f"{spec.gateway}/{prefix}")
    present = False
    for entry in _cmd.run_json(["ip", "-j", "-4", "addr", "show", "dev", spec.bridge]):
        for addr in entry.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            current = ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}")
            if current == wanted:
                present = True
            else:  # a stale gateway from an earlier spec of this network
                _cmd.run(["ip", "addr", "del", str(current), "dev", spec.bridge])
    if not present:
        _cmd.run(
            ["ip", "addr", "add", str(wanted), "brd", "+", "dev", spec.bridge]
        )


def delete(spec: NetworkSpec) -> bool:
    """Delete the bridge if it exists (and is a bridge). True when something was deleted."""
    info = link(spec.bridge)
    if info is None or not is_bridge(info):
        return False
    proc = _cmd.run(["ip", "link", "del", "dev", spec.bridge], check=False)
    if proc.returncode != 0 and link(spec.bridge) is not None:
        raise HostError(
            f"`ip link del dev {spec.bridge}` failed: {proc.stderr.strip()}",
            command=["ip", "link", "del", "dev", spec.bridge],
        )
    log.info("network %s: deleted bridge %s", spec.name, spec.bridge)
    return True


def status(spec: NetworkSpec) -> bool:
    info = link(spec.bridge)
    return info is not None and is_bridge(info) and is_up(info)
