"""`corral down --purge`: stop the node and remove what it made on this host.

`corral down` leaves the networks in place on purpose (VMs keep running on their bridges).
Purge removes them: each network of the agent (``DATA_DIR/agent/networks/*.json``) with the
agent's own teardown (dnsmasq, nftables chains, the bridges this node made), then the
node's own per-NIC filter tables. The data dir stays (images, disks, the DB):
``rm -rf DATA_DIR`` forgets the node.

VMs would lose their network, so a node with VMs is refused, nothing stopped or removed:
with the engine running, its VMs are asked from the API, and ``force`` deletes them (and
their disks) through it first; with the engine stopped, libvirt is asked for domains whose
disks lie under the data dir, and they are refused in any case (only the engine deletes a
VM cleanly). A domain the engine does not know is refused too.

The host is reached through seams (``Seams``) so that tests pass fakes of the API and of the
libvirt listing; the defaults are the real ones.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.errors import Conflict, CorralError, Unavailable
from corral.node.paths import NodePaths

log = logging.getLogger(__name__)
DELETE_TIMEOUT = 600.0
AGENT_STOP_TIMEOUT = 20.0


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Op(Protocol):
    @property
    def id(self) -> str: ...


class VmApi(Protocol):
    """What purge needs of the SDK (``corral.client.Client``)."""

    def list_vms(self) -> Sequence[_Named]: ...
    def delete_vm(self, name: str, force: bool = False) -> _Op: ...
    def wait(self, op_id: str, timeout: float = 600) -> object: ...
    def close(self) -> None: ...


@dataclass
class Seams:
    """The host as purge sees it; every field has the real default."""

    engine_running: Callable[[Path], bool] = field(default_factory=lambda: _engine_running)
    api: Callable[[Path], VmApi] = field(default_factory=lambda: _api)
    domains: Callable[[Path], list[str]] = field(default_factory=lambda: node_domains)
    stop: Callable[[Path], bool] = field(default_factory=lambda: stop_node)
    networks: Callable[[Path], tuple[list[str], dict[str, str]]] = field(
        default_factory=lambda: remove_networks)
    tables: Callable[[Path], list[str]] = field(default_factory=lambda: remove_port_tables)


@dataclass
class PurgeReport:
    deleted_vms: list[str] = field(default_factory=list)
    stopped: bool = False
    networks: list[str] = field(default_factory=list)  # removed
    failed: dict[str, str] = field(default_factory=dict)  # network -> why it stays
    tables: list[str] = field(default_factory=list)  # nftables tables removed


def refusal(data_dir: Path, *, engine_running: bool, force: bool, vms: list[str],
            domains: list[str]) -> str | None:
    """Pure: why purge must not go on (nothing done yet), or None.

    ``vms``: the engine's VMs (engine running); ``domains``: libvirt's domains with disks
    under the data dir.
    """
    if engine_running:
        unknown = sorted(set(domains) - set(vms))
        if unknown:
            return (f"libvirt has domains with disks under {data_dir} that the engine does "
                    f"not know: {', '.join(unknown)}; remove them (`virsh destroy NAME; virsh "
                    "undefine NAME`) or keep the networks (plain `corral down`)")
        if vms and not force:
            return (f"the node in {data_dir} still has VMs: {', '.join(sorted(vms))}; delete "
                    "them first, or pass --force to delete them and their disks with the node")
        return None
    if domains:
        return (f"VMs of the node in {data_dir} are still defined in libvirt: "
                f"{', '.join(sorted(domains))}; start the node with `corral up --detach "
                f"--data-dir {data_dir}` so that `corral down --purge --force` can delete "
                "them (or delete them with `corral vm delete`)")
    return None


def purge(data_dir: Path, *, force: bool = False, seams: Seams | None = None,
          say: Callable[[str], None] = log.info) -> PurgeReport:
    """Stop the node and remove its networks; ``Conflict`` (nothing done) while it has VMs,
    unless ``force`` deletes them first (engine running). ``say``: progress for people."""
    h = seams or Seams()
    report = PurgeReport()
    running = h.engine_running(data_dir)
    domains = h.domains(data_dir)
    api = h.api(data_dir) if running else None
    try:
        vms = [vm.name for vm in api.list_vms()] if api is not None else []
        why = refusal(data_dir, engine_running=running, force=force, vms=vms, domains=domains)
        if why is not None:
            raise Conflict(why, field="vms", vms=sorted(set(vms) | set(domains)))
        if api is not None and vms:
            report.deleted_vms = _delete_vms(api, vms, say)
    finally:
        if api is not None:
            api.close()
    report.stopped = h.stop(data_dir)
    if report.stopped:
        say(f"stopped the node in {data_dir}")
    report.networks, report.failed = h.networks(data_dir)
    for name in report.networks:
        say(f"removed network {name}")
    for name, why in report.failed.items():
        say(f"network {name} could not be removed: {why}")
    report.tables = h.tables(data_dir)
    for table in report.tables:
        say(f"removed nftables table {table}")
    return report


def _delete_vms(api: VmApi, vms: list[str], say: Callable[[str], None]) -> list[str]:
    """Delete every VM (forced: running ones are powered off) and wait for all of them."""
    ops = [(name, api.delete_vm(name, force=True)) for name in sorted(vms)]
    for name, op in ops:
        api.wait(op.id, DELETE_TIMEOUT)  # raises the operation's error: nothing stopped then
        say(f"deleted VM {name}")
    return [name for name, _ in ops]


# -- the real seams ----------------------------------------------------------------------

def _engine_running(data_dir: Path) -> bool:
    from corral.node.up import _pid_alive  # the engine's imports are heavy: only here

    return _pid_alive(NodePaths(data_dir).engine_pid) is not None


def _api(data_dir: Path) -> VmApi:
    from corral.client import Client

    return Client.from_config(data_dir)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_node(data_dir: Path, timeout: float = AGENT_STOP_TIMEOUT) -> bool:
    """`corral down`, and wait for the agent to exit: it must not rebuild what we remove."""
    from corral.node.up import _pid_alive, stop

    paths = NodePaths(data_dir)
    pids = {"engine": _pid_alive(paths.engine_pid), "agent": _pid_alive(paths.agent_pid)}
    stopped = stop(data_dir)
    deadline = time.monotonic() + timeout
    for what, pid in pids.items():
        while pid is not None and _alive(pid):
            if time.monotonic() > deadline:
                raise Unavailable(f"the {what} (pid {pid}) did not exit within {timeout:g} s; "
                                  "the node's networks are kept")
            time.sleep(0.1)
    return stopped


def _virsh(uri: str, *args: str) -> str:
    try:
        proc = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                              timeout=30, check=False)
    except FileNotFoundError:
        return ""  # no libvirt client, so no domains of ours
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"`virsh {' '.join(args)}` failed: {exc}") from exc
    if proc.returncode != 0:
        raise Unavailable(f"cannot list libvirt's domains ({uri}): {proc.stderr.strip()}; "
                          "purge needs libvirt to tell whether VMs of this node remain")
    return proc.stdout


def disks_under(xml: str, data_dir: Path) -> bool:
    """Pure: whether a domain's XML has a disk whose file lies under ``data_dir``."""
    from corral.domainxml.model import Domain

    root = data_dir.absolute()
    for disk in Domain.from_xml(xml).devices.disks:
        path = disk.source_path
        if path and Path(path).is_absolute() and Path(path).is_relative_to(root):
            return True
    return False


def node_domains(data_dir: Path, uri: str = "qemu:///system") -> list[str]:
    """libvirt's domains (any state) with a disk under ``data_dir``: this node's VMs."""
    names = [n for n in _virsh(uri, "list", "--all", "--name").split() if n]
    return sorted(n for n in names if disks_under(_virsh(uri, "dumpxml", n), data_dir))


def remove_networks(data_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Tear down every network of the node's agent (as its ``DELETE /v1/networks/NAME``
    does) and forget its spec; (removed, {name: why not}). Run once the agent is stopped."""
    from corral.agent.network import NetworkSpec, delete_network

    net_dir = NodePaths(data_dir).agent_dir / "networks"
    specs: dict[Path, NetworkSpec] = {}
    failed: dict[str, str] = {}
    for path in sorted(net_dir.glob("*.json")):
        try:
            specs[path] = NetworkSpec(name=path.stem, **json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            failed[path.stem] = f"unreadable spec {path}: {exc}"
    removed: list[str] = []
    kept: list[NetworkSpec] = []  # failed: their (trunk) bridge stays with them
    for path, spec in list(specs.items()):
        del specs[path]  # a trunk bridge goes with the last network on it
        shared = any(o.bridge == spec.bridge for o in [*specs.values(), *kept])
        try:
            delete_network(spec, net_dir, keep_bridge=shared)
        except CorralError as exc:
            failed[spec.name] = exc.message
            kept.append(spec)
            continue
        path.unlink(missing_ok=True)
        removed.append(spec.name)
    return removed, failed


def taps_left(links: list[dict[str, Any]]) -> list[str]:
    """Pure: corral taps (``cv`` + 12 hex) among ``links`` (``ip -j link``): VMs of some
    node still run here."""
    from corral.agent.network import firewall

    names = (str(link.get("ifname", "")) for link in links)
    return sorted(n for n in names if firewall.is_tap(n))


def remove_port_tables(data_dir: Path) -> list[str]:
    """This node's per-NIC filter tables (``firewall.SgTables``: each node has its own
    pair, other nodes' stay), unless a tap of one of its ports is still up here."""
    from corral.agent.network import _cmd, firewall

    agent_dir = NodePaths(data_dir).agent_dir
    ports = {path.stem for path in (agent_dir / "ports").glob("cv*.json")}
    if ports:
        try:
            if ports & set(taps_left(_cmd.run_json(["ip", "-j", "link", "show"]))):
                return []
        except CorralError:  # cannot tell: keep the rules of what may still run
            return []
    tables = firewall.SgTables.for_state_dir(agent_dir)
    removed: list[str] = []
    for family, table in (("bridge", tables.bridge), ("inet", tables.inet)):
        try:
            proc = _cmd.run(["nft", "delete", "table", family, table], check=False)
        except CorralError:  # no nft: no tables
            return removed
        if proc.returncode == 0:
            removed.append(f"{family} {table}")
    return removed
