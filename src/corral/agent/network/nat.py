"""nftables rules of a NAT network, in corral's own table ``inet corral``.

Each network gets two base chains of its own, so that deleting a network removes exactly its
rules and never touches another network's or the host's:

    table inet corral
      chain fwd-NAME   (filter, hook forward)     accept from / to the bridge
      chain nat-NAME   (nat, hook postrouting)    masquerade subnet -> outside the subnet

Every rule also carries the comment ``corral:NAME``. The table itself is created when
missing and left in place (empty) when the last network goes; the ruleset is never flushed.
Changes are applied as one ``nft -j -f -`` transaction (JSON: names and addresses are
data, never parsed as nft syntax), so they are atomic.

Note: an accept here does not override a drop in another table (e.g. an iptables FORWARD
policy of DROP set by some other software); such a host must allow the bridge there.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from corral.agent.network import _cmd
from corral.agent.network.spec import NetworkSpec, parse_subnet
from corral.errors import HostError

FAMILY = "inet"
TABLE = "corral"


def chain_names(spec: NetworkSpec) -> tuple[str, str]:
    return f"fwd-{spec.name}", f"nat-{spec.name}"


def comment(spec: NetworkSpec) -> str:
    return f"corral:{spec.name}"


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix(net: ipaddress.IPv4Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _ip(field: str) -> dict[str, Any]:
    return {"payload": {"protocol": "ip", "field": field}}


def render_ruleset(spec: NetworkSpec) -> dict[str, Any]:
    """The ``nft -j -f -`` document that (re)creates this network's chains with their rules.

    JSON rather than nft's text syntax: names and addresses are data, never parsed as syntax.
    """
    net = parse_subnet(spec.subnet)
    fwd, post = chain_names(spec)
    where = {"family": FAMILY, "table": TABLE}
    tag = comment(spec)

    def rule(chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
        return {"add": {"rule": {**where, "chain": chain, "expr": list(expr), "comment": tag}}}

    saddr = _match(_ip("saddr"), _prefix(net))
    return {
        "nftables": [
            {"add": {"table": {"family": FAMILY, "name": TABLE}}},
            {"add": {"chain": {**where, "name": fwd, "type": "filter", "hook": "forward",
                               "prio": 0, "policy": "accept"}}},
            {"add": {"chain": {**where, "name": post, "type": "nat", "hook": "postrouting",
                               "prio": 100, "policy": "accept"}}},
            {"flush": {"chain": {**where, "name": fwd}}},
            {"flush": {"chain": {**where, "name": post}}},
            rule(fwd, _match({"meta": {"key": "iifname"}}, spec.bridge), {"accept": None}),
            rule(fwd, _match({"meta": {"key": "oifname"}}, spec.bridge), {"accept": None}),
            # multicast and limited broadcast stay local, as libvirt does
            rule(post, saddr, _match(_ip("daddr"), {"prefix": {"addr": "224.0.0.0", "len": 24}}),
                 {"return": None}),
            rule(post, saddr, _match(_ip("daddr"), "255.255.255.255"), {"return": None}),
            rule(post, saddr, _match(_ip("daddr"), _prefix(net), "!="), {"masquerade": None}),
        ]
    }


def _table() -> list[dict[str, Any]]:
    """The objects of ``table inet corral`` (``nft -j``), or [] when the table is missing."""
    proc = _cmd.run(["nft", "-j", "list", "table", FAMILY, TABLE], check=False)
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return []
        raise HostError(
            f"`nft -j list table {FAMILY} {TABLE}` failed: {proc.stderr.strip()}",
            command=["nft", "-j", "list", "table", FAMILY, TABLE],
        )
    try:
        items: list[dict[str, Any]] = json.loads(proc.stdout).get("nftables", [])
    except (ValueError, AttributeError) as exc:
        raise HostError("nft printed output that is not JSON") from exc
    return items


def _present_chains(spec: NetworkSpec, items: list[dict[str, Any]]) -> set[str]:
    mine = set(chain_names(spec))
    return {
        item["chain"]["name"]
        for item in items
        if "chain" in item and item["chain"].get("name") in mine
    }


def ensure(spec: NetworkSpec) -> bool:
    """Install this network's chains and rules (replacing older ones). True when new."""
    existed = bool(_present_chains(spec, _table()))
    _cmd.run(["nft", "-j", "-f", "-"], input=json.dumps(render_ruleset(spec)))
    return not existed


def delete(spec: NetworkSpec) -> bool:
    """Remove this network's chains (and so its rules). True when there was something."""
    present = _present_chains(spec, _table())
    if not present:
        return False
    where = {"family": FAMILY, "table": TABLE}
    commands: list[dict[str, Any]] = []
    for name in sorted(present):
        commands.append({"flush": {"chain": {**where, "name": name}}})
        commands.append({"delete": {"chain": {**where, "name": name}}})
    _cmd.run(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": commands}))
    return True


def status(spec: NetworkSpec) -> bool:
    """True when both chains exist and the masquerade rule of this network is there."""
    items = _table()
    if _present_chains(spec, items) != set(chain_names(spec)):
        return False
    _, post = chain_names(spec)
    for item in items:
        rule = item.get("rule")
        if (
            rule
            and rule.get("chain") == post
            and rule.get("comment") == comment(spec)
            and any("masquerade" in expr for expr in rule.get("expr", []))
        ):
            return True
    return False


def enable_ip_forward() -> None:
    """Turn on IPv4 forwarding in this network namespace (needed for NAT)."""
    path = "/proc/sys/net/ipv4/ip_forward"
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return
        with open(path, "w") as f:
            f.write("1\n")
    except OSError as exc:
        raise HostError(f"could not enable IPv4 forwarding ({path}): {exc}") from exc
