"""A real corral node for integration tests: `corral up` inside a lab host.

The lab host is a network + mount namespace with its own libvirtd (corral.lab.host), so
the tests never touch this machine's libvirt or networks. The CLI and the SDK talk to the
node from the root namespace over the lab host's veth address.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ceph_cluster import CephCluster
from labutil import xdist_worker
from nodeutil import PORT, Node

from corral.lab.host import LabHost


def _free_index() -> int:
    """A lab-host index of 100-199 whose link (10.209.INDEX.1 here) no other run holds,
    starting from one drawn from our pid."""
    used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                          check=True, timeout=10).stdout
    # xdist workers (make test's lanes) start apart: two nodes coming up at once.
    start = (os.getpid() + 50 * xdist_worker()) % 100
    for i in range(100):
        index = 100 + (start + i) % 100
        if f" 10.209.{index}.1/" not in used:
            return index
    pytest.fail("every lab-host index from 100 to 199 is in use: stale lab hosts? "
                "(`ip -o -4 addr | grep 10.209.`)")


@pytest.fixture(scope="session")
def node(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (namespaces, libvirtd); run them as root")
    # Not under pytest's temp dir: QEMU runs as libvirt-qemu and must traverse down to the VM
    # disks, and every new pytest session resets /tmp/pytest-of-root to 0700.
    root = Path(tempfile.mkdtemp(prefix="corral-it-", dir="/var/tmp"))
    root.chmod(0o711)
    # Named by our pid and given a free index, so that test runs side by side (several
    # developers) never collide.
    host = LabHost(f"n{os.getpid():x}"[:8], _free_index(), root / "host")
    host.start()
    n = Node(host=host, data_dir=root / "corral", url=f"https://{host.address}:{PORT}",
             temp_dirs=(tmp_path_factory.getbasetemp(),))  # imports from tmp_path: allowed
    # The lab host has no route to the package mirror: seed the agent's build cache.
    shutil.copytree(tiny_cache / "debs", n.data_dir / "agent" / "storage" / "build" / "cache" / "debs")
    try:
        n.up()
        n.cli("image", "build-tiny", "tiny", timeout=600)
        yield n
    finally:
        n.down()
        host.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ceph(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    """A real Ceph cluster (mon, mgr, three OSDs on bluestore files, replication size 3)
    inside the node's lab host, with a replicated pool ``rbd``; killed and removed at the end."""
    cluster = CephCluster(tmp_path_factory.mktemp("ceph"), node.host)
    cluster.start()
    try:
        cluster.create_pool("rbd")
        yield cluster
    finally:
        cluster.stop()
