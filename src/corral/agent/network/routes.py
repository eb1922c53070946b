"""Refuse a subnet that overlaps what this network namespace already routes or holds.

A corral network must never shadow the host's uplink (e.g. eth0's 192.0.2.0/24) or any other
route: the check reads the IPv4 routes of every table and the IPv4 addresses of every
interface, ignoring the default route and whatever sits on the network's own bridge. What
sits on a bridge of another corral node on this machine is said to be that node's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from corral.agent.network import _cmd
from corral.agent.network import owner as ownership
from corral.agent_api.networks import parse_subnet, validate_bridge_name
from corral.errors import Conflict


def _overlaps(
    subnet: str,
    bridge: str,
    routes: Iterable[dict[str, Any]],
    addresses: Iterable[dict[str, Any]],
) -> Iterator[tuple[str, str | None]]:
    """(description, device) of each route/address that overlaps ``subnet``."""
    net = parse_subnet(subnet)
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
            yield (
                f"route {kind + ' ' if kind and kind != 'unicast' else ''}{dst}{where}"
                f"{' table ' + str(table) if table else ''}",
                str(dev) if dev else None,
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
                yield f"address {iface} on {dev}", str(dev) if dev else None


def find_overlaps(
    subnet: str,
    bridge: str,
    routes: Iterable[dict[str, Any]],
    addresses: Iterable[dict[str, Any]] = (),
    owners: Mapping[str, str] | None = None,
) -> list[str]:
    """Pure: descriptions of the routes/addresses (``ip -j`` shapes) that overlap ``subnet``.

    ``owners``: device -> data dir of the other corral node it belongs to, named in the
    description of what lies on that device.
    """
    owners = owners or {}
    found = []
    for text, dev in _overlaps(subnet, bridge, routes, addresses):
        where = owners.get(dev) if dev else None
        found.append(f"{text} (bridge of the corral node in {where})" if where else text)
    return found


def overlap_owners(
    subnet: str,
    bridge: str,
    routes: Iterable[dict[str, Any]],
    addresses: Iterable[dict[str, Any]],
    owners: Mapping[str, str],
) -> list[str]:
    """Pure: the data dirs of the other corral nodes whose devices hold an overlap, sorted."""
    return sorted({owners[dev] for _, dev in _overlaps(subnet, bridge, routes, addresses)
                   if dev is not None and dev in owners})


def check_route_overlap(subnet: str, bridge: str, owner: str | None = None) -> None:
    """``Conflict`` if ``subnet`` overlaps a route or address of this netns not on ``bridge``.

    ``owner``: this node (``owner.owner_of``), so that only other nodes' devices are named
    as theirs; the error's details then carry ``owner``, the first such node's data dir.
    """
    parse_subnet(subnet)
    validate_bridge_name(bridge)
    routes = _cmd.run_json(["ip", "-j", "-4", "route", "show", "table", "all"])
    addresses = _cmd.run_json(["ip", "-j", "-4", "addr", "show"])
    if not find_overlaps(subnet, bridge, routes, addresses):
        return
    owners = ownership.host_foreign_devices(owner)  # only now: it reads links and /proc
    overlaps = sorted(set(find_overlaps(subnet, bridge, routes, addresses, owners)))
    nodes = overlap_owners(subnet, bridge, routes, addresses, owners)
    raise Conflict(
        f"subnet {subnet} overlaps what this host already uses: "
        f"{'; '.join(overlaps)}; choose another subnet",
        field="subnet",
        overlaps=overlaps,
        **({"owner": nodes[0]} if nodes else {}),
    )
