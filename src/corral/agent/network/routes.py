"""Refuse a subnet that overlaps what this network namespace already routes or holds.

A corral network must never shadow the host's uplink (e.g. eth0's 192.0.2.0/24) or any other
route: the check reads the IPv4 routes of every table and the IPv4 addresses of every
interface, ignoring the default route and whatever sits on the network's own bridge.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from corral.agent.network import _cmd
from corral.agent.network.spec import parse_subnet, validate_bridge_name
from corral.errors import Conflict


def find_overlaps(
    subnet: str,
    bridge: str,
    routes: Iterable[dict[str, Any]],
    addresses: Iterable[dict[str, Any]] = (),
) -> list[str]:
    """Pure: descriptions of the routes/addresses (``ip -j`` shapes) that overlap ``subnet``."""
    net = parse_subnet(subnet)
    found: list[str] = []
    for route in routes:
        dst = route.get("dst")
        dev = route.get("dev")
        if not isinstance(dst, str) or dst == "default" or dev == bridge:
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if other.version != 4 or other.prefixlen == 0:
            continue
        if net.overlaps(other):
            where = f" dev {dev}" if dev else ""
            kind = route.get("type")
            table = route.get("table")
            found.append(
                f"route {kind + ' ' if kind and kind != 'unicast' else ''}{dst}{where}"
                f"{' table ' + str(table) if table else ''}"
            )
    for entry in addresses:
        dev = entry.get("ifname")
        if dev == bridge:
            continue
        for addr in entry.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            try:
                iface = ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}")
            except (KeyError, ValueError):
                continue
            if net.overlaps(iface.network):
                found.append(f"address {iface} on {dev}")
    return found


def check_route_overlap(subnet: str, bridge: str) -> None:
    """``Conflict`` if ``subnet`` overlaps a route or address of this netns not on ``bridge``."""
    parse_subnet(subnet)
    validate_bridge_name(bridge)
    routes = _cmd.run_json(["ip", "-j", "-4", "route", "show", "table", "all"])
    addresses = _cmd.run_json(["ip", "-j", "-4", "addr", "show"])
    overlaps = find_overlaps(subnet, bridge, routes, addresses)
    if overlaps:
        raise Conflict(
            f"subnet {subnet} overlaps what this host already uses: "
            f"{'; '.join(sorted(set(overlaps)))}; choose another subnet",
            field="subnet",
            overlaps=sorted(set(overlaps)),
        )
