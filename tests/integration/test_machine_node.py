"""The node as `make run` starts it: `corral up` in this machine's own namespaces.

Every other integration test runs its node inside a lab host, whose libvirtd has a /dev/kvm
node of its own; this machine's libvirtd has not, and once re-probed QEMU on every define
(11.5 s each) without any test noticing. This module starts a node beside any node the user
runs (its own data dir, ports, bridge and subnet) and checks what a user of that node sees:
defines leave libvirt's capability cache alone, a second node on the same bridge or subnet
is refused with a message that names the first, and `corral down --purge` removes from the
machine what the node made there. The guests only ask DHCP of their own bridge.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nodeutil import CORRAL

from corral.node.paths import USER_CONFIG

CAPS_DIR = Path("/var/cache/libvirt/qemu/capabilities")


def _free_port_pair(start: int) -> int:
    """A port P with P and P+1 (the agent's) free on loopback and the wildcard address."""
    for port in range(start, start + 400, 2):
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", p))
        except OSError:
            continue
        return port
    pytest.fail(f"no free port pair in {start}-{start + 400}")


def _free_subnet() -> str:
    """A /24 of 10.215.0.0/16 that nothing on this machine routes."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=True, timeout=10).stdout
    for i in range(os.getpid() % 200, os.getpid() % 200 + 200):
        prefix = f"10.215.{i % 250}."
        if prefix not in routes:
            return f"{prefix}0/24"
    pytest.fail("every 10.215.X.0/24 is routed here")


@dataclass
class MachineNode:
    data_dir: Path
    port: int
    bridge: str
    subnet: str
    user_config_before: str | None = None  # ~/.config/corral/client.json before `up`

    def cli(self, *args: str, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CORRAL_DATA_DIR": str(self.data_dir), "COLUMNS": "200"}
        for var in ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_CA"):
            env.pop(var, None)
        proc = subprocess.run([*CORRAL, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def up(self, bridge: str | None = None, subnet: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli("up", "--detach", "--data-dir", str(self.data_dir),
                        "--port", str(self.port), "--bridge", bridge or self.bridge,
                        "--subnet", subnet or self.subnet, check=check, timeout=180)

    def vm_state(self, name: str) -> str:
        return str(json.loads(self.cli("vm", "show", name, "--output", "json").stdout)["state"])


def _user_config() -> str | None:
    return USER_CONFIG.read_text() if USER_CONFIG.exists() else None


def _caps() -> dict[str, float]:
    return {f.name: f.stat().st_mtime for f in CAPS_DIR.glob("*.xml")}


def _pids_of(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True,
                          timeout=10, check=False).stdout.split()


def _root_daemons() -> set[int]:
    """PIDs of libvirtd and virtlogd in this machine's own network namespace: lab hosts run
    theirs (``libvirtd -d``) in their own, and those must outlive this module."""
    ours = os.readlink("/proc/self/ns/net")
    pids: set[int] = set()
    for daemon in ("libvirtd", "virtlogd"):
        out = subprocess.run(["pgrep", "-x", daemon], capture_output=True, text=True,
                             timeout=10, check=False).stdout
        for pid in map(int, out.split()):
            try:
                if os.readlink(f"/proc/{pid}/ns/net") == ours:
                    pids.add(pid)
            except OSError:
                continue  # gone meanwhile
    return pids


@pytest.fixture(scope="module")
def machine_node(tiny_cache: Path) -> Iterator[MachineNode]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (libvirtd, bridges); run them as root")
    root = Path(tempfile.mkdtemp(prefix="corral-it-machine-", dir="/var/tmp"))
    root.chmod(0o711)  # QEMU (libvirt-qemu) traverses down to the VM disks
    node = MachineNode(root / "node", _free_port_pair(18400 + os.getpid() % 500 * 2),
                       f"crlit{os.getpid() % 100000}", _free_subnet())
    before = _root_daemons()
    cache = node.data_dir / "agent" / "storage" / "build" / "cache" / "debs"
    shutil.copytree(tiny_cache / "debs", cache)
    node.user_config_before = _user_config()
    try:
        node.up()
        node.cli("image", "build-tiny", "tiny", timeout=600)
        yield node
    finally:
        node.cli("down", "--purge", "--force", check=False, timeout=180)
        node.cli("down", check=False, timeout=60)  # if the purge could not run
        # Leave the machine's daemons as we found them: stop only those `up` started here.
        for pid in _root_daemons() - before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


def test_defines_on_the_machine_node_keep_libvirts_capability_cache(
        machine_node: MachineNode) -> None:
    n = machine_node
    n.cli("vm", "create", "mc-warm", "--image", "tiny", "--memory", "128M")
    before = _caps()
    assert before, f"libvirt keeps no QEMU capability cache in {CAPS_DIR}"
    n.cli("vm", "create", "mc-1", "--image", "tiny", "--memory", "128M")
    n.cli("vm", "create", "mc-2", "--image", "tiny", "--memory", "128M", "--start")
    # A libvirtd whose view of /dev/kvm disagrees with its probe rewrites these on each define.
    assert _caps() == before
    assert n.vm_state("mc-2") == "running"
    status = json.loads(n.cli("status", "--output", "json").stdout)
    assert [h["status"] for h in status["hosts"]] == ["up"]
    # a node with its own data dir is not the default of the machine's CLI
    assert _user_config() == n.user_config_before


def test_a_second_node_on_the_same_bridge_or_subnet_is_refused_naming_the_first(
        machine_node: MachineNode) -> None:
    first = machine_node
    other_dir = Path(tempfile.mkdtemp(prefix="corral-it-second-", dir="/var/tmp"))
    other_dir.chmod(0o711)
    try:
        second = MachineNode(other_dir / "node", _free_port_pair(first.port + 2),
                             f"crlis{os.getpid() % 100000}", _free_subnet())
        for bridge, subnet in ((first.bridge, second.subnet), (second.bridge, first.subnet)):
            proc = second.up(bridge=bridge, subnet=subnet, check=False)
            said = proc.stdout + proc.stderr
            assert proc.returncode != 0, said
            assert str(first.data_dir) in said, said  # names the node in the way
            assert "--subnet" in said and "--bridge" in said, said  # and what to pass instead
            assert "Traceback" not in said
            # nothing of the second node is left running, and the first still works
            assert not (second.data_dir / "engine.pid").exists()
            assert not (second.data_dir / "agent.pid").exists()
            assert not _pids_of(f"--state-dir {second.data_dir}")
        assert first.vm_state("mc-2") == "running"
        assert subprocess.run(["ip", "link", "show", second.bridge], capture_output=True,
                              timeout=10, check=False).returncode != 0
    finally:
        shutil.rmtree(other_dir, ignore_errors=True)


def test_down_purge_refuses_with_vms_and_removes_what_the_node_made_with_force(
        machine_node: MachineNode) -> None:
    n = machine_node
    refused = n.cli("down", "--purge", check=False)
    assert refused.returncode != 0
    assert "mc-2" in refused.stdout + refused.stderr  # names the VMs in the way
    assert n.vm_state("mc-2") == "running"  # and stopped nothing

    n.cli("down", "--purge", "--force", timeout=180)
    assert subprocess.run(["ip", "link", "show", n.bridge], capture_output=True, timeout=10,
                          check=False).returncode != 0
    assert not _pids_of(f"dnsmasq.*{n.data_dir}")
    chains = subprocess.run(["nft", "-j", "list", "chains"], capture_output=True, text=True,
                            timeout=10, check=True).stdout
    assert n.bridge not in chains
    domains = subprocess.run(["virsh", "list", "--all", "--name"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
    assert not [d for d in domains if d.startswith("mc-")]
    assert not (n.data_dir / "engine.pid").exists()
