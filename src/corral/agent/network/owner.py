"""Which corral node a Linux bridge belongs to: several nodes (data dirs) may share a machine.

A node is named by its agent's state dir (``DATA_DIR/agent`` under ``corral up``), derived
from the networks dir every network call receives (``DATA_DIR/agent/networks``). Each bridge
an agent makes or adopts carries the interface alias ``corral:<agent state dir>``
(``ip link set dev BR alias ...``; ``ip -j link`` shows it as ``ifalias``), so a second node
refuses another's bridge with a clear error rather than failing later in dnsmasq ("address
already in use"), and never deletes it. A bridge made before bridges carried an alias is
told by the corral dnsmasq that serves it (its config file lies in the owner's state dir).

A bridge without an alias is adopted (and stamped); an alias a person set is kept as it is.
Open vSwitch bridges carry no owner yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

from corral.agent.network import _cmd, dnsmasq
from corral.errors import Conflict

PREFIX = "corral:"
ALIAS_MAX = 255  # IFALIASZ less the NUL


def owner_of(state_dir: Path) -> str:
    """The owner id of the node whose networks dir is ``state_dir``: its agent state dir."""
    return str(Path(state_dir).absolute().parent)


def alias_of(owner: str) -> str:
    return (PREFIX + owner)[:ALIAS_MAX]


def same(a: str, b: str) -> bool:
    """Owner ids compared as the (possibly truncated) aliases that carry them."""
    return alias_of(a) == alias_of(b)


def owner_of_conf(conf: PurePath) -> str:
    """The owner id of a dnsmasq config ``<agent dir>/networks/<name>/dnsmasq.conf``."""
    return str(conf.parent.parent.parent)


def node_dir(owner: str) -> str:
    """The node's data dir for people: ``corral up`` keeps its agent in ``DATA_DIR/agent``."""
    p = PurePath(owner)
    return str(p.parent) if p.name == "agent" else owner


def alias_owner(info: Mapping[str, Any] | None) -> str | None:
    """The owner id in a link's corral alias (``ip -j link`` shape); None without one."""
    alias = info.get("ifalias") if info else None
    if isinstance(alias, str) and alias.startswith(PREFIX) and len(alias) > len(PREFIX):
        return alias[len(PREFIX):]
    return None


def link_owner(info: Mapping[str, Any] | None, served: Mapping[str, PurePath]) -> str | None:
    """Pure: whose the link is, by its alias, else (no alias at all) by the corral dnsmasq
    that serves it (``served``: device -> dnsmasq config); None when nothing tells."""
    if info is None:
        return None
    found = alias_owner(info)
    if found is None and not info.get("ifalias"):
        conf = served.get(str(info.get("ifname", "")))
        found = owner_of_conf(conf) if conf is not None else None
    return found


def foreign(info: Mapping[str, Any] | None, owner: str,
            served: Mapping[str, PurePath] | None = None) -> str | None:
    """Pure: the other node's owner id when the link belongs to another node, else None."""
    found = link_owner(info, served or {})
    return found if found is not None and not same(found, owner) else None


def needs_stamp(info: Mapping[str, Any] | None) -> bool:
    """Pure: a bridge to stamp with our alias: one with no alias (a person's is kept)."""
    return info is not None and not info.get("ifalias")


def refusal(name: str, other: str) -> Conflict:
    where = node_dir(other)
    return Conflict(
        f"bridge {name} belongs to the corral node in {where}; choose another bridge name "
        "and subnet", field="bridge", bridge=name, owner=where)


def check(name: str, info: Mapping[str, Any] | None, owner: str) -> None:
    """``Conflict`` when the existing link ``name`` belongs to another node (alias, else the
    dnsmasq serving it: read from /proc only for a link without alias)."""
    if info is None:
        return
    served = dnsmasq.served_devices() if not info.get("ifalias") else {}
    other = foreign(info, owner, served)
    if other is not None:
        raise refusal(name, other)


def stamp(name: str, owner: str) -> None:
    _cmd.run(["ip", "link", "set", "dev", name, "alias", alias_of(owner)])


def foreign_devices(links: Iterable[Mapping[str, Any]], owner: str | None,
                    served: Mapping[str, PurePath] | None = None) -> dict[str, str]:
    """Pure: device -> data dir of the other corral node it belongs to, for ``links``
    (``ip -j link`` shape); with ``owner`` None, every corral device counts."""
    out: dict[str, str] = {}
    for info in links:
        found = link_owner(info, served or {})
        if found is not None and (owner is None or not same(found, owner)):
            out[str(info.get("ifname", ""))] = node_dir(found)
    return out


def host_foreign_devices(owner: str | None) -> dict[str, str]:
    """``foreign_devices`` of this network namespace."""
    links = _cmd.run_json(["ip", "-j", "link", "show"])
    return foreign_devices(links, owner, dnsmasq.served_devices())
