"""The state file of ``corral lab`` and the names that mark what a lab made.

Everything a lab makes is written to ``ROOT/lab.json`` *before* it is made, so that
``corral lab down`` can remove it even after a crash or a ``kill -9`` of the lab's processes.
Names carry the lab's prefix too (``corral lab up --prefix``; default ``lab``), so what the
state file missed is still found by :func:`sweep_targets`:

    network namespace  corral-<prefix><n>    n = 0: the engine's, n >= 1: lab host <prefix><n>
    veth, machine side crl-<prefix><n>
    veth, router side  crr-<prefix><n>       in the shared router namespace (corral.lab._net)
    nftables table     inet corral_lab_cut   inside a lab host's namespace (cut-network)

A prefix is letters only, so the digits after it always delimit a lab name (``lab1`` is of
lab ``lab``, never of a lab ``la``), and at most 5 of them (a lab host name has 8 characters).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import InvalidInput

STATE_FILE = "lab.json"
STATE_VERSION = 1
PREFIX_RE = re.compile(r"^[a-z]{1,5}$")
CUT_TABLE = "corral_lab_cut"  # family inet, in a lab host's own network namespace
MAX_HOSTS = 99  # a prefix (<= 5) and a number (<= 2 digits here) fit a host name (<= 8)


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
        raise InvalidInput(f"lab prefix {prefix!r} must be 1-5 letters a-z", field="prefix")
    return prefix


def host_name(prefix: str, number: int) -> str:
    """Lab host ``number`` of the lab (0 is the engine's namespace)."""
    return f"{prefix}{number}"


def number_of(prefix: str, name: str) -> int | None:
    """The number of lab name ``name`` in the lab of ``prefix``; None if it is not one."""
    m = re.fullmatch(rf"{re.escape(prefix)}(\d{{1,3}})", name)
    return int(m.group(1)) if m else None


@dataclass
class HostRecord:
    name: str
    number: int
    index: int  # corral.lab.LabHost index: 10.209.<index>.0/29
    root_dir: str
    address: str
    agent_pid: int | None = None
    powered: bool = True
    cut: bool = False  # the nftables table CUT_TABLE is in its namespace


@dataclass
class EngineRecord:
    netns: str
    veth: str
    index: int
    address: str
    port: int
    data_dir: str
    pid: int | None = None
    # How `lab up` started it (`corral up ... --detach` in its namespace): `lab engine
    # start` runs it again with the same options.
    argv: list[str] = field(default_factory=list)


@dataclass
class LabState:
    root: str
    prefix: str
    storage: str = "none"  # none | shared | rbd
    shared_dir: str | None = None
    ceph_dir: str | None = None  # rbd: the Ceph cluster's files (its daemons: engine netns)
    engine: EngineRecord | None = None
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    # Every lab host runs corosync (votequorum; `lab up --quorum`, the default with 3+ hosts)
    quorum: bool = False
    remote: str | None = None  # the CLI remote `lab up` added
    previous_remote: str | None = None  # the one it switched from
    version: int = STATE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabState:
        if data.get("version") != STATE_VERSION:
            raise InvalidInput(f"lab state version {data.get('version')!r} is not "
                               f"{STATE_VERSION}")
        engine = data.get("engine")
        return cls(
            root=str(data["root"]), prefix=check_prefix(data["prefix"]),
            storage=str(data.get("storage", "none")), shared_dir=data.get("shared_dir"),
            ceph_dir=data.get("ceph_dir"),
            engine=EngineRecord(**engine) if engine else None,
            hosts={name: HostRecord(**h) for name, h in data.get("hosts", {}).items()},
            remote=data.get("remote"), previous_remote=data.get("previous_remote"),
            quorum=bool(data.get("quorum", False)),
        )

    def used_indexes(self) -> set[int]:
        used = {h.index for h in self.hosts.values()}
        if self.engine is not None:
            used.add(self.engine.index)
        return used

    def next_number(self) -> int:
        taken = {h.number for h in self.hosts.values()}
        return next(n for n in range(1, MAX_HOSTS + 2) if n not in taken)


def state_path(root: Path) -> Path:
    return root / STATE_FILE


def load(root: Path) -> LabState | None:
    """The lab's state, or None when there is no state file (no lab, or one fully down)."""
    try:
        text = state_path(root).read_text()
    except FileNotFoundError:
        return None
    try:
        return LabState.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, InvalidInput) as exc:
        raise InvalidInput(f"{state_path(root)} is not a lab state file ({exc}): "
                           "`corral lab down --prefix PREFIX` sweeps by name instead") from exc


def save(state: LabState) -> None:
    """Write the state atomically (a crash leaves the old file or the new one, never half)."""
    path = state_path(Path(state.root))
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(state.to_json())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def remove(root: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(root).unlink()


@dataclass
class SweepTargets:
    """What ``lab down`` removes: recorded things plus everything named like the lab's."""

    netns: list[str]  # namespaces corral-<prefix><n>, the engine's (n = 0) last
    veths: list[str]  # crl-<prefix><n> on the machine
    router_links: list[str]  # crr-<prefix><n> in the router namespace


def sweep_targets(state: LabState | None, prefix: str, netns_names: list[str],
                  machine_links: list[str], router_links: list[str]) -> SweepTargets:
    """Pure: the namespaces and links of the lab ``prefix``, recorded or found by name.

    ``netns_names``, ``machine_links``, ``router_links``: what exists now (``ip netns list``,
    ``ip link`` here and in the router namespace). Recorded names are kept even when absent:
    removing what is already gone is a no-op, and a half-made host is still looked for.
    """
    names: set[str] = set()
    if state is not None:
        names.update(state.hosts)
        if state.engine is not None:
            names.add(state.engine.netns.removeprefix("corral-"))
    for ns in netns_names:
        if ns.startswith("corral-") and number_of(prefix, ns.removeprefix("corral-")) is not None:
            names.add(ns.removeprefix("corral-"))
    for link in machine_links:
        if link.startswith("crl-") and number_of(prefix, link.removeprefix("crl-")) is not None:
            names.add(link.removeprefix("crl-"))
    for link in router_links:
        if link.startswith("crr-") and number_of(prefix, link.removeprefix("crr-")) is not None:
            names.add(link.removeprefix("crr-"))
    # Hosts first (highest number first), the engine's namespace (number 0) last.
    ordered = sorted(names, key=lambda n: -(number_of(prefix, n) or 0))
    return SweepTargets(netns=[f"corral-{n}" for n in ordered],
                        veths=[f"crl-{n}" for n in ordered],
                        router_links=[f"crr-{n}" for n in ordered])
