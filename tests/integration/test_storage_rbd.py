"""Ceph RBD pools on a real node and a real Ceph cluster (mon, mgr, three OSDs on bluestore
files, replication size 3; started by the `ceph` fixture inside the node's lab host): pool
and volume CRUD checked with the `rbd` CLI, a full pool, and an RBD volume hot-plugged into a
running tiny guest (QEMU's librbd through a libvirt network disk), resized live, detached."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from ceph_cluster import CephCluster
from nodeutil import Node
from storageutil import domblklist, running_vm, traversable, wait_guest_size

pytestmark = pytest.mark.integration

MIB = 1 << 20


@pytest.fixture()
def rbd_pool(node: Node, ceph: CephCluster) -> Iterator[str]:
    """A corral rbd pool ``st-ceph`` on the Ceph pool ``rbd``; removed at the end."""
    traversable(node)
    node.cli("storage", "pool", "create", "st-ceph", "--type", "rbd",
             "--ceph-conf", str(ceph.conf), "--ceph-pool", "rbd")
    try:
        yield "st-ceph"
    finally:
        volumes: Any = node.cli_json("volume", "list", "st-ceph")
        for v in volumes:
            node.cli("volume", "delete", f"st-ceph/{v['name']}", check=False)
        node.cli("storage", "pool", "delete", "st-ceph", check=False)


def _refused(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    proc = node.cli(*args, check=False)
    assert proc.returncode == 2, f"expected a refusal: {proc.stdout}\n{proc.stderr}"
    return proc


def _images(ceph: CephCluster) -> list[str]:
    return sorted(json.loads(ceph.rbd("ls", "-p", "rbd", "--format", "json")))


def _image_size(ceph: CephCluster, image: str) -> int:
    return int(json.loads(ceph.rbd("info", f"rbd/{image}", "--format", "json"))["size"])


def test_the_cluster_replicates_three_times(ceph: CephCluster) -> None:
    assert ceph.cli_json("osd", "stat")["num_up_osds"] == 3
    assert ceph.cli_json("osd", "pool", "get", "rbd", "size")["size"] == 3


def test_rbd_pool_and_volume_crud(node: Node, ceph: CephCluster, rbd_pool: str) -> None:
    pool: Any = node.cli_json("storage", "pool", "show", rbd_pool)
    assert (pool["type"], pool["status"], pool["ceph_pool"]) == ("rbd", "ready", "rbd")
    assert pool["ceph_conf"] == str(ceph.conf) and pool["host"] is None
    assert pool["capacity"] >= pool["available"] > 0

    node.cli("volume", "create", f"{rbd_pool}/st-vol", "--size", "64M")
    vol: Any = node.cli_json("volume", "show", f"{rbd_pool}/st-vol")
    assert (vol["format"], vol["size"], vol["source"]) == ("raw", 64 * MIB, "rbd/st-vol")
    assert vol["allocation"] == 0  # thin: nothing written yet
    assert _images(ceph) == ["st-vol"] and _image_size(ceph, "st-vol") == 64 * MIB

    node.cli("volume", "resize", f"{rbd_pool}/st-vol", "--size", "128M")
    assert _image_size(ceph, "st-vol") == 128 * MIB
    assert "only grow" in _refused(node, "volume", "resize", f"{rbd_pool}/st-vol",
                                   "--size", "64M").stderr

    qcow2 = _refused(node, "volume", "create", f"{rbd_pool}/st-q", "--size", "8M",
                     "--format", "qcow2")
    assert "[format]" in qcow2.stderr and "RBD images are raw" in qcow2.stderr
    full = _refused(node, "volume", "create", f"{rbd_pool}/st-huge", "--size", "100G")
    assert "insufficient_resources" in full.stderr and "too full" in full.stderr
    assert _images(ceph) == ["st-vol"]  # nothing written for refused requests

    in_use = _refused(node, "storage", "pool", "delete", rbd_pool)
    assert "in use" in in_use.stderr
    node.cli("volume", "delete", f"{rbd_pool}/st-vol")
    assert _images(ceph) == []


def test_rbd_volume_hotplugged_into_a_running_guest(node: Node, ceph: CephCluster,
                                                    rbd_pool: str) -> None:
    node.cli("volume", "create", f"{rbd_pool}/st-rbd-disk", "--size", "32M")
    with running_vm(node, "st-rbd") as vm:
        node.cli("vm", "disk", "attach", vm, "--volume", f"{rbd_pool}/st-rbd-disk")
        assert domblklist(node, vm)["vdb"] == "rbd/st-rbd-disk"
        wait_guest_size(node, vm, "vdb", 32 * MIB)
        # QEMU holds the image open: Ceph lists it as watched, and corral refuses to delete.
        assert json.loads(ceph.rbd("status", "rbd/st-rbd-disk", "--format", "json"))["watchers"]
        refused = _refused(node, "volume", "delete", f"{rbd_pool}/st-rbd-disk")
        assert "attached to VM st-rbd" in refused.stderr

        node.cli("volume", "resize", f"{rbd_pool}/st-rbd-disk", "--size", "64M")
        wait_guest_size(node, vm, "vdb", 64 * MIB)
        assert _image_size(ceph, "st-rbd-disk") == 64 * MIB

        node.cli("vm", "disk", "detach", vm, "--volume", f"{rbd_pool}/st-rbd-disk")
        wait_guest_size(node, vm, "vdb", None)
        assert "vdb" not in domblklist(node, vm)
    node.cli("volume", "delete", f"{rbd_pool}/st-rbd-disk")
    assert _images(ceph) == []
