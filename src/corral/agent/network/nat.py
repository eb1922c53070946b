"""nftables rules of a network, in corral's own table ``inet corral``.

Each network gets base chains of its own, so that deleting a network removes exactly its
rules and never touches another network's or the host's. ``DEV`` is the device holding the
network's gateway (its bridge, or its access bridge / OVS port for a VLAN network):

    table inet corral
      chain fwd-NAME   (filter, hook forward)
          nat:       iifname DEV accept; oifname DEV ct state established,related accept;
                     oifname DEV drop          (out freely, in only as replies)
          isolated:  iifname DEV oifname != DEV drop; oifname DEV iifname != DEV drop
      chain nat-NAME   (nat, hook postrouting)    nat only: masquerade subnet -> elsewhere

A routed network has no chains (the host forwards it as any route); a bridge-mode network
has none either. With br_netfilter, traffic bridged between two guests of one network also
passes the forward hook with DEV as both interfaces, so it is never dropped here. A drop in
any base chain is final, so the ``drop`` rules of one network hold whatever the chains of
another accept: a new connection from one network into a nat or isolated network is refused.

Every rule also carries the comment ``corral:NAME``. The table is created when missing and
deleted when the last network's chains go; the rest of the ruleset is never touched.
Changes are applied as one ``nft -j -f -`` transaction (JSON: names and addresses are
data, never parsed as nft syntax), so they are atomic.

Note: an accept here does not override a drop in another table (e.g. an iptables FORWARD
policy of DROP set by some other software); such a host must allow the bridge there.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from typing import Any

from corral.agent.network import _cmd
from corral.agent_api.networks import NetworkSpec, parse_subnet
from corral.errors import HostError

FAMILY = "inet"
TABLE = "corral"
_lock = threading.Lock()  # the table is shared by every network: one change at a time


def chain_names(spec: NetworkSpec) -> tuple[str, str]:
    """Named by the gateway device, not the network: two nodes on one machine may both have a
    network ``default``, but never the same device, so neither touches the other's chains."""
    dev = spec.l3_device or spec.bridge
    return f"fwd-{dev}", f"nat-{dev}"


def _legacy_chains(spec: NetworkSpec, items: list[dict[str, Any]]) -> set[str]:
    """Chains of an older corral (named ``fwd-NAME``/``nat-NAME``) whose rules are on this
    network's device: replaced by ``chain_names``' and removed with them."""
    old = {f"fwd-{spec.name}", f"nat-{spec.name}"} - set(chain_names(spec))
    dev = spec.l3_device
    found: set[str] = set()
    for item in items:
        rule = item.get("rule")
        if rule and rule.get("chain") in old and dev is not None and any(
            expr.get("match", {}).get("right") == dev for expr in rule.get("expr", [])
        ):
            found.add(rule["chain"])
    return found


def comment(spec: NetworkSpec) -> str:
    return f"corral:{spec.name}"


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix(net: ipaddress.IPv4Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _ip(field: str) -> dict[str, Any]:
    return {"payload": {"protocol": "ip", "field": field}}


def wanted_chains(spec: NetworkSpec) -> tuple[str, ...]:
    """The chains this network's mode needs (none for routed and bridge)."""
    fwd, post = chain_names(spec)
    return {"nat": (fwd, post), "isolated": (fwd,)}.get(spec.kind, ())


def render_ruleset(spec: NetworkSpec) -> dict[str, Any]:
    """The ``nft -j -f -`` document that (re)creates this network's chains with their rules.

    JSON rather than nft's text syntax: names and addresses are data, never parsed as syntax.
    """
    fwd, post = chain_names(spec)
    where = {"family": FAMILY, "table": TABLE}
    tag = comment(spec)
    dev = spec.l3_device
    chains = wanted_chains(spec)
    assert dev is not None and chains

    def rule(chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
        return {"add": {"rule": {**where, "chain": chain, "expr": list(expr), "comment": tag}}}

    iif = {"meta": {"key": "iifname"}}
    oif = {"meta": {"key": "oifname"}}
    doc: list[dict[str, Any]] = [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"chain": {**where, "name": fwd, "type": "filter", "hook": "forward",
                           "prio": 0, "policy": "accept"}}},
    ]
    if post in chains:
        doc.append({"add": {"chain": {**where, "name": post, "type": "nat",
                                      "hook": "postrouting", "prio": 100, "policy": "accept"}}})
    doc += [{"flush": {"chain": {**where, "name": name}}} for name in chains]
    if spec.kind == "isolated":
        doc += [
            rule(fwd, _match(iif, dev), _match(oif, dev, "!="), {"drop": None}),
            rule(fwd, _match(oif, dev), _match(iif, dev, "!="), {"drop": None}),
        ]
        return {"nftables": doc}
    net = parse_subnet(spec.subnet)
    saddr = _match(_ip("saddr"), _prefix(net))
    established = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    doc += [
        rule(fwd, _match(iif, dev), {"accept": None}),
        rule(fwd, _match(oif, dev), established, {"accept": None}),
        rule(fwd, _match(oif, dev), {"drop": None}),
        # multicast and limited broadcast stay local, as libvirt does
        rule(post, saddr, _match(_ip("daddr"), {"prefix": {"addr": "224.0.0.0", "len": 24}}),
             {"return": None}),
        rule(post, saddr, _match(_ip("daddr"), "255.255.255.255"), {"return": None}),
        rule(post, saddr, _match(_ip("daddr"), _prefix(net), "!="), {"masquerade": None}),
    ]
    return {"nftables": doc}


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
    """Install this network's chains and rules for its mode (removing chains the mode does
    not need). True when a chain was created now."""
    wanted = wanted_chains(spec)
    with _lock:
        items = _table()
        present = _present_chains(spec, items)
        commands: list[dict[str, Any]] = []
        if wanted:
            commands += render_ruleset(spec)["nftables"]
        where = {"family": FAMILY, "table": TABLE}
        for name in sorted((present - set(wanted)) | _legacy_chains(spec, items)):
            commands.append({"flush": {"chain": {**where, "name": name}}})
            commands.append({"delete": {"chain": {**where, "name": name}}})
        if commands:
            _cmd.run(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": commands}))
        if not wanted:
            _drop_table_if_empty()
    return bool(set(wanted) - present)


def _drop_table_if_empty() -> None:
    items = _table()
    if items and not any("chain" in item or "set" in item or "map" in item for item in items):
        _cmd.run(["nft", "-j", "-f", "-"], input=json.dumps(
            {"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]}))


def delete(spec: NetworkSpec) -> bool:
    """Remove this network's chains (and so its rules), and the table once it is empty.
    True when there was something of this network."""
    with _lock:
        items = _table()
        present = _present_chains(spec, items) | _legacy_chains(spec, items)
        if present:
            where = {"family": FAMILY, "table": TABLE}
            commands: list[dict[str, Any]] = []
            for name in sorted(present):
                commands.append({"flush": {"chain": {**where, "name": name}}})
                commands.append({"delete": {"chain": {**where, "name": name}}})
            _cmd.run(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": commands}))
        _drop_table_if_empty()
    return bool(present)


def status(spec: NetworkSpec) -> bool:
    """True when the chains of the network's mode exist, with their key rule (masquerade for
    nat, a drop for isolated), and no others."""
    items = _table()
    wanted = wanted_chains(spec)
    if _present_chains(spec, items) != set(wanted):
        return False
    if not wanted:
        return True
    key = "masquerade" if spec.kind == "nat" else "drop"
    for item in items:
        rule = item.get("rule")
        if (
            rule
            and rule.get("chain") in wanted
            and rule.get("comment") == comment(spec)
            and any(key in expr for expr in rule.get("expr", []))
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
