"""Growing a VM's root disk on a real host: offline (qemu-img on the stopped VM's disk) and
live (QEMU block resize: the running guest's kernel sees the new size at once), never
smaller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nodeutil import Node
from storageutil import disk_bytes, running_vm, wait_guest_size

from corral.agent.storage import qemu_img_info

pytestmark = pytest.mark.integration

MIB = 1 << 20


def _root(node: Node, vm: str) -> dict[str, Any]:
    disks: Any = node.cli_json("vm", "disk", "list", vm)
    return next(d for d in disks if d["kind"] == "root")


def test_the_root_disk_grows_stopped_and_live_and_never_shrinks(node: Node) -> None:
    node.cli("vm", "create", "rd-grow", "--image", "tiny", "--memory", "128M")
    try:
        node.cli("vm", "disk", "resize", "rd-grow", "root", "--size", "96M")
        root = _root(node, "rd-grow")
        assert root["size"] == 96 * MIB
        assert qemu_img_info(Path(root["source"]))["virtual-size"] == 96 * MIB  # the file itself
    finally:
        node.cli("vm", "delete", "rd-grow", "--force")

    with running_vm(node, "rd-live") as vm:
        assert disk_bytes(node, vm, "vda") == 64 * MIB  # the tiny image's size
        node.cli("vm", "disk", "resize", vm, "root", "--size", "128M")
        wait_guest_size(node, vm, "vda", 128 * MIB)
        assert _root(node, vm)["size"] == 128 * MIB

        shrink = node.cli("vm", "disk", "resize", vm, "root", "--size", "100M", check=False)
        assert shrink.returncode == 2 and "disks only grow" in shrink.stderr
        bad = node.cli("vm", "disk", "resize", vm, "vdb", "--size", "1G", check=False)
        assert bad.returncode == 2 and "give root or an attached volume" in bad.stderr
        assert disk_bytes(node, vm, "vda") == 128 * MIB
