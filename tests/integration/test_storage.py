"""Storage pools and volumes on a real node (CLI, engine, agent, qemu-img, libvirtd, QEMU):
the default pool, dir pools, a full pool, refused deletions, bad names, and volumes
hot-plugged into a running tiny guest, which is asked (through its serial console) what it
sees: /sys/block/vdb/size before and after a live resize, and nothing once detached."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from nodeutil import Node, wait_for
from storageutil import (
    disk_bytes,
    domblklist,
    running_vm,
    traversable,
    wait_guest_size,
)

from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _qemu_reaches_the_node(node: Node) -> None:
    traversable(node)

MIB = 1 << 20


def _refused(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    proc = node.cli(*args, check=False)
    assert proc.returncode == 2, f"expected a refusal: {proc.stdout}\n{proc.stderr}"
    return proc


def _volume(node: Node, ref: str) -> Any:
    return node.cli_json("volume", "show", ref)


def test_default_pool_after_up(node: Node) -> None:
    pools: Any = node.cli_json("storage", "pool", "list")
    default = next(p for p in pools if p["name"] == "default")
    assert (default["type"], default["status"]) == ("dir", "ready")
    assert default["path"] == str(node.data_dir / "agent" / "storage")
    assert default["capacity"] > default["available"] > 0
    listing = node.cli("storage", "pool", "list").stdout
    assert "CAPACITY" in listing and "ALLOCATION" in listing and "FREE" in listing
    refused = _refused(node, "storage", "pool", "delete", "default")
    assert "default pool holds this host's images" in refused.stderr


def test_dir_pool_volume_crud(node: Node) -> None:
    root = node.data_dir / "agent" / "storage" / "pools" / "st-local"
    node.cli("storage", "pool", "create", "st-local")
    try:
        pool: Any = node.cli_json("storage", "pool", "show", "st-local")
        assert Path(pool["path"]) == root and root.is_dir()
        assert (pool["type"], pool["status"], pool["volumes"]) == ("dir", "ready", 0)

        node.cli("volume", "create", "st-local/data", "--size", "1G")
        node.cli("volume", "create", "st-local/raw", "--size", "64M", "--format", "raw")
        data = _volume(node, "st-local/data")
        assert (data["format"], data["size"], data["vm"]) == ("qcow2", 1 << 30, None)
        assert data["allocation"] < 4 * MIB  # thin
        assert Path(data["source"]) == root / "data.qcow2" and Path(data["source"]).exists()
        listed: Any = node.cli_json("volume", "list", "st-local")
        assert [(v["name"], v["format"]) for v in listed] == [("data", "qcow2"), ("raw", "raw")]
        assert "st-local/data" in node.cli("volume", "list").stdout

        node.cli("volume", "resize", "st-local/data", "--size", "2G")
        assert _volume(node, "st-local/data")["size"] == 2 << 30
        shrink = _refused(node, "volume", "resize", "st-local/data", "--size", "1G")
        assert "volumes only grow" in shrink.stderr

        in_use = _refused(node, "storage", "pool", "delete", "st-local")
        assert "in use" in in_use.stderr and "2 volume(s)" in in_use.stderr
        for name in ("data", "raw"):
            node.cli("volume", "delete", f"st-local/{name}")
        assert not (root / "data.qcow2").exists() and not (root / "raw.raw").exists()
        assert node.cli_json("volume", "list", "st-local") == []
    finally:
        for name in ("data", "raw"):
            node.cli("volume", "delete", f"st-local/{name}", check=False)
        node.cli("storage", "pool", "delete", "st-local", check=False)
    pools: Any = node.cli_json("storage", "pool", "list")
    assert "st-local" not in [p["name"] for p in pools]
    assert not root.exists()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("volume", "create", "default/../x", "--size", "1M"), "volume"),
        (("volume", "create", "../x", "--size", "1M"), "volume"),
        (("volume", "create", "default/a b", "--size", "1M"), "volume"),
        (("volume", "create", "default/ok", "--size", "0"), "size"),
        (("volume", "create", "default/ok", "--size", "1M", "--format", "vmdk"), "format"),
        (("storage", "pool", "create", "../p"), "name"),
        (("storage", "pool", "create", "p", "--path", "relative"), "path"),
        (("storage", "pool", "create", "p", "--path", "/srv/../etc"), "path"),
        (("storage", "pool", "create", "p", "--type", "nfs"), "type"),
        (("vm", "disk", "attach", "nobody", "--volume", "default"), "volume"),
    ],
)
def test_bad_names_are_refused_naming_the_field(node: Node, args: tuple[str, ...],
                                                field: str) -> None:
    def made() -> tuple[list[str], list[tuple[str, int]]]:
        volumes: Any = node.cli_json("volume", "list")
        pools: Any = node.cli_json("storage", "pool", "list")
        return ([f"{v['pool']}/{v['name']}" for v in volumes],
                [(p["name"], p["volumes"]) for p in pools])

    before = made()
    refused = _refused(node, *args)
    assert f"[{field}]" in refused.stderr, refused.stderr
    assert made() == before


def test_full_pool_is_refused_before_writing(node: Node) -> None:
    """A dir pool on a 16 MiB tmpfs (mounted inside the lab host)."""
    small = node.data_dir.parent / "st-small"
    node.host.run(["mkdir", "-p", str(small)])
    node.host.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0711", "tmpfs", str(small)])
    try:
        node.cli("storage", "pool", "create", "st-small", "--path", str(small))
        pool: Any = node.cli_json("storage", "pool", "show", "st-small")
        assert pool["capacity"] == 16 * MIB

        refused = _refused(node, "volume", "create", "st-small/big", "--size", "1G")
        assert "insufficient_resources" in refused.stderr
        assert "pool st-small is too full for volume big" in refused.stderr
        node.cli("volume", "create", "st-small/a", "--size", "8M", "--format", "raw")
        node.host.run(["dd", "if=/dev/zero", f"of={small}/filler", "bs=1M", "count=12"])
        refused = _refused(node, "volume", "create", "st-small/b", "--size", "8M")
        assert "too full" in refused.stderr
        grow = _refused(node, "volume", "resize", "st-small/a", "--size", "16M")
        assert "too full for growing st-small/a" in grow.stderr
        files = node.host.run(["ls", "-A", str(small)]).stdout.split()
        assert sorted(files) == ["a.raw", "filler"]  # nothing half-written
        volumes: Any = node.cli_json("volume", "list", "st-small")
        assert [v["name"] for v in volumes] == ["a"]
    finally:
        node.cli("volume", "delete", "st-small/a", check=False)
        node.cli("storage", "pool", "delete", "st-small", check=False)
        node.host.run(["umount", str(small)], check=False)
        node.host.run(["rmdir", str(small)], check=False)


def test_hotplug_resize_and_detach_in_a_running_guest(node: Node) -> None:
    node.cli("volume", "create", "default/st-hot", "--size", "32M")
    node.cli("volume", "create", "default/st-hot-scsi", "--size", "16M", "--format", "raw")
    try:
        with running_vm(node, "st-hot") as vm:
            assert disk_bytes(node, vm, "vdb") is None
            node.cli("vm", "disk", "attach", vm, "--volume", "default/st-hot")
            vol = _volume(node, "default/st-hot")
            assert (vol["vm"], vol["target"], vol["bus"]) == (vm, "vdb", "virtio")
            assert domblklist(node, vm)["vdb"] == vol["source"]
            assert domblklist(node, vm, inactive=True)["vdb"] == vol["source"]  # persistent
            wait_guest_size(node, vm, "vdb", 32 * MIB)

            # A scsi disk hot-plugs onto a virtio-scsi controller plugged in with it. (The tiny
            # guest's initramfs has no sd_mod, so libvirt is asked, not the guest.)
            node.cli("vm", "disk", "attach", vm, "--volume", "default/st-hot-scsi",
                     "--bus", "scsi")
            assert _volume(node, "default/st-hot-scsi")["target"] == "sda"
            assert domblklist(node, vm)["sda"].endswith("/st-hot-scsi.raw")
            disks: Any = node.cli_json("vm", "disk", "list", vm)
            assert [(d["target"], d["kind"], d["volume"]) for d in disks] == [
                ("sda", "volume", "default/st-hot-scsi"), ("vda", "root", None),
                ("vdb", "volume", "default/st-hot")]
            refused = _refused(node, "vm", "disk", "attach", vm, "--volume", "default/st-hot")
            assert "already attached to VM st-hot" in refused.stderr
            refused = _refused(node, "vm", "disk", "attach", vm, "--volume",
                               "default/st-hot-scsi", "--bus", "sata")
            assert "cannot be hot-plugged" in refused.stderr

            # Never delete a volume in use.
            refused = _refused(node, "volume", "delete", "default/st-hot")
            assert "is in use: attached to VM st-hot" in refused.stderr
            assert Path(vol["source"]).exists()

            # Resize of an attached volume reaches the guest (QEMU block resize).
            node.cli("volume", "resize", "default/st-hot", "--size", "48M")
            wait_guest_size(node, vm, "vdb", 48 * MIB)
            assert _volume(node, "default/st-hot")["size"] == 48 * MIB

            node.cli("vm", "disk", "detach", vm, "--volume", "default/st-hot")
            wait_guest_size(node, vm, "vdb", None)
            assert "vdb" not in domblklist(node, vm)
            assert "vdb" not in domblklist(node, vm, inactive=True)
            vol = _volume(node, "default/st-hot")
            assert (vol["vm"], vol["status"]) == (None, "ready")
            node.cli("vm", "disk", "detach", vm, "--volume", "default/st-hot-scsi")
            assert "sda" not in domblklist(node, vm)
        # Deleting a VM keeps volumes; a detached volume can be deleted.
        node.cli("volume", "delete", "default/st-hot")
        assert not Path(vol["source"]).exists()
    finally:
        for ref in ("default/st-hot", "default/st-hot-scsi"):
            node.cli("volume", "delete", ref, check=False)


def test_attached_volume_survives_stop_and_start(node: Node) -> None:
    """A disk attached to a stopped VM is in the domain the engine designs at start.

    Needs services/vm_design.py domain_xml() to add the attached volumes.
    """
    node.cli("volume", "create", "default/st-cold", "--size", "24M")
    try:
        with running_vm(node, "st-cold") as vm:
            node.cli("vm", "stop", vm, "--force")
            node.cli("vm", "disk", "attach", vm, "--volume", "default/st-cold")
            assert "vdb" in domblklist(node, vm, inactive=True)
            traversable(node)
            node.cli("vm", "start", vm)
            wait_for("the second boot", lambda: node.console_log(vm).count(BOOT_MARKER) == 2)
            wait_guest_size(node, vm, "vdb", 24 * MIB)
            node.cli("vm", "stop", vm, "--force")
            node.cli("vm", "disk", "detach", vm, "--volume", "default/st-cold")
            traversable(node)
            node.cli("vm", "start", vm)
            assert "vdb" not in domblklist(node, vm)
        assert _volume(node, "default/st-cold")["vm"] is None  # the VM is gone, the volume not
    finally:
        node.cli("volume", "delete", "default/st-cold", check=False)
