"""When `corral up` cannot make its default network: who is in the way, and what to pass.

Several nodes (data dirs) may run on one machine, but each needs a bridge and a subnet of
its own; the agent refuses another node's (``corral.agent.network.owner``). This module
turns that refusal into the command line that works: a free bridge name and a free /24,
read from this machine's links and routes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from corral.agent.network import _cmd
from corral.agent.network.routes import find_overlaps
from corral.agent_api.networks import BRIDGE_MAX
from corral.errors import Conflict, CorralError

TRIES = 256


def free_bridge(taken: Collection[str], wanted: str) -> str:
    """Pure: ``wanted`` if no link has that name, else the next of its stem (corral1...)."""
    if wanted not in taken:
        return wanted
    stem = wanted.rstrip("0123456789") or "corral"
    digits = wanted[len(stem):]
    start = int(digits) + 1 if digits else 1
    for i in range(start, start + TRIES):
        name = f"{stem}{i}"
        if len(name) <= BRIDGE_MAX and name not in taken:
            return name
    return wanted


def free_subnet(wanted: str, routes: Iterable[dict[str, Any]],
                addresses: Iterable[dict[str, Any]]) -> str | None:
    """Pure: ``wanted`` if nothing overlaps it, else the first private subnet of its size
    further on (10.210.0.0/24 -> 10.211.0.0/24 ...) that overlaps no route or address."""
    routes, addresses = list(routes), list(addresses)
    net = ipaddress.IPv4Network(wanted, strict=False)
    step = max(net.num_addresses, 1 << 16) if net.prefixlen >= 16 else net.num_addresses
    for k in range(TRIES):
        start = int(net.network_address) + k * step
        if start + net.num_addresses > 1 << 32:
            break
        candidate = ipaddress.IPv4Network((start, net.prefixlen))
        if candidate.is_private and not find_overlaps(str(candidate), "", routes, addresses):
            return str(candidate)
    return None


def up_command(data_dir: Path, subnet: str | None, bridge: str, extra: str = "") -> str:
    """``extra``: more options of the failed command, e.g. `` --port 9443``."""
    subnet_arg = f" --subnet {subnet}" if subnet else " --subnet SUBNET"
    return f"corral up --data-dir {data_dir}{subnet_arg} --bridge {bridge}{extra}"


def suggestion(data_dir: Path, subnet: str, bridge: str, extra: str = "") -> str:
    """The `corral up` command line with a bridge and subnet free on this machine now."""
    links = _cmd.run_json(["ip", "-j", "link", "show"])
    routes = _cmd.run_json(["ip", "-j", "-4", "route", "show", "table", "all"])
    addresses = _cmd.run_json(["ip", "-j", "-4", "addr", "show"])
    names = {str(link.get("ifname")) for link in links}
    return up_command(data_dir, free_subnet(subnet, routes, addresses),
                      free_bridge(names, bridge), extra)


def explain(exc: Conflict, data_dir: Path, subnet: str, bridge: str, extra: str = "",
            suggest: str | None = None) -> Conflict:
    """The agent's refusal of the default network, with the command that works.

    ``suggest``: the command line to show (tests); read from this machine when None.
    """
    if suggest is None:
        try:
            suggest = suggestion(data_dir, subnet, bridge, extra)
        except CorralError:
            suggest = up_command(data_dir, None, "BRIDGE", extra)
    owner = exc.details.get("owner")
    hint = (f" (or remove that node's networks: `corral down --purge --data-dir {owner}`)"
            if owner else "")
    return Conflict(
        f"cannot make the default network of the node in {data_dir}: {exc.message}. "
        f"Start this node with `{suggest}`{hint}",
        field=exc.field, **exc.details)
