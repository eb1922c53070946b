"""VM root disks on each pool type (`vm create --pool`): a dir pool, a shared pool and a Ceph
RBD pool (the session's real Ceph cluster: three OSDs, replication size 3). On each: create
from the image, boot the tiny guest, write in it, stop/start and read it back, hot-plug a
volume of the same pool, clone the VM (linked: an overlay in the pool / RBD layering) and
boot the clone, then delete everything and find the pool empty. RBD also: templates as RBD
clones, full clones, and the refusals (snapshots, deleting an image or template in use)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ceph_cluster import CephCluster
from nodeutil import Node, wait_for
from storageutil import (
    disk_bytes,
    domblklist,
    guest_sh,
    traversable,
    wait_guest_size,
)

from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration

MIB = 1 << 20
CEPH_POOL = "pv"


@dataclass
class PoolUnderTest:
    name: str
    type: str
    path: Path | None = None  # dir, shared
    ceph: CephCluster | None = None  # rbd

    def images(self) -> list[str]:
        """What the pool holds besides corral's volumes: root disks and their bases."""
        if self.ceph is not None:
            return sorted(json.loads(self.ceph.rbd("ls", "-p", CEPH_POOL, "--format", "json")))
        assert self.path is not None
        return sorted(str(p.relative_to(self.path)) for sub in (".vms", ".bases")
                      for p in (self.path / sub).glob("*"))

    def rbd_info(self, image: str) -> dict[str, Any]:
        assert self.ceph is not None
        info: dict[str, Any] = json.loads(self.ceph.rbd("info", f"{CEPH_POOL}/{image}",
                                                        "--format", "json"))
        return info

    def used(self, vm: str) -> int:
        """Bytes the VM's root disk holds in the pool (RBD: `rbd du`; files: allocated)."""
        if self.ceph is not None:
            du = json.loads(self.ceph.rbd("du", f"{CEPH_POOL}/vm.{vm}", "--format", "json"))
            return sum(int(i["used_size"]) for i in du["images"] if not i.get("snapshot"))
        assert self.path is not None
        return (self.path / ".vms" / f"{vm}.qcow2").stat().st_blocks * 512


@pytest.fixture(scope="module")
def ceph_pool(ceph: CephCluster) -> str:
    """A Ceph pool of this module's own (the `rbd` one is test_storage_rbd's)."""
    if CEPH_POOL not in json.loads(ceph.cli("osd", "pool", "ls", "--format", "json")):
        ceph.create_pool(CEPH_POOL)
    return CEPH_POOL


def _make_pool(node: Node, request: pytest.FixtureRequest, kind: str) -> PoolUnderTest:
    traversable(node)
    name = f"pv-{kind}"
    if kind == "rbd":
        ceph: CephCluster = request.getfixturevalue("ceph")
        request.getfixturevalue("ceph_pool")
        node.cli("storage", "pool", "create", name, "--type", "rbd", "--ceph-conf",
                 str(ceph.conf), "--ceph-pool", CEPH_POOL)
        return PoolUnderTest(name, kind, ceph=ceph)
    path = node.data_dir.parent / f"pv-{kind}-dir"
    if kind == "shared":  # NFS in production: here a directory the lab host sees as well
        path.mkdir(mode=0o711, exist_ok=True)
    node.cli("storage", "pool", "create", name, "--type", kind, "--path", str(path))
    return PoolUnderTest(name, kind, path=path)


def _drop_pool(node: Node, pool: PoolUnderTest, vms: list[str]) -> None:
    for vm in vms:
        node.cli("vm", "delete", vm, "--force", check=False)
    volumes: Any = node.cli_json("volume", "list", pool.name)
    for v in volumes:
        node.cli("volume", "delete", f"{pool.name}/{v['name']}", check=False)
    node.cli("storage", "pool", "delete", pool.name, check=False)


def _refused(node: Node, *args: str) -> str:
    proc = node.cli(*args, check=False)
    assert proc.returncode == 2, f"expected a refusal: {proc.stdout}\n{proc.stderr}"
    return proc.stderr


def _boot(node: Node, vm: str, start: bool = True) -> None:
    traversable(node)
    before = node.console_log(vm).count(BOOT_MARKER)
    if start:
        node.cli("vm", "start", vm)
    wait_for(f"{vm} to boot", lambda: node.console_log(vm).count(BOOT_MARKER) > before,
             timeout=120)


def _root_source(node: Node, vm: str) -> str:
    return domblklist(node, vm, inactive=True)["vda"]


@pytest.fixture(params=["dir", "shared", "rbd"])
def pool(node: Node, request: pytest.FixtureRequest) -> Iterator[PoolUnderTest]:
    made = _make_pool(node, request, str(request.param))
    try:
        yield made
    finally:
        _drop_pool(node, made, [f"pv-{made.type}", f"pv-{made.type}-c"])


def test_vm_lifecycle_on_each_pool_type(node: Node, pool: PoolUnderTest) -> None:
    vm, clone = f"pv-{pool.type}", f"pv-{pool.type}-c"
    node.cli("vm", "create", vm, "--image", "tiny", "--memory", "128M", "--disk", "96M",
             "--pool", pool.name)
    shown: Any = node.cli_json("vm", "show", vm)
    assert shown["pool"] == pool.name
    if pool.ceph is not None:  # an RBD clone (layering) of the image imported once
        assert _root_source(node, vm) == f"{CEPH_POOL}/vm.{vm}"
        info = pool.rbd_info(f"vm.{vm}")
        assert info["parent"]["image"] == "img.tiny" and info["parent"]["snapshot"] == "base"
        assert info["size"] == 96 * MIB
    else:  # a qcow2 overlay in the pool on the pool's copy of the image
        assert pool.path is not None
        assert _root_source(node, vm) == str(pool.path / ".vms" / f"{vm}.qcow2")
        assert pool.images() == [".bases/img.tiny.qcow2", f".vms/{vm}.qcow2"]

    _boot(node, vm)
    assert disk_bytes(node, vm, "vda") == 96 * MIB
    before = pool.used(vm)
    assert guest_sh(node, vm, "dd if=/dev/urandom of=/root/big bs=1M count=4 2>/dev/null; "
                    "echo pool-data > /root/f; sync; echo ok", timeout=60) == "ok"
    assert pool.used(vm) >= before + 4 * MIB  # the guest's writes landed in the pool
    node.cli("vm", "stop", vm)  # ACPI shutdown: the guest unmounts its root cleanly
    _boot(node, vm)
    assert guest_sh(node, vm, "cat /root/f") == "pool-data"

    # A volume of the same pool, hot-plugged into the running VM and out again.
    node.cli("volume", "create", f"{pool.name}/pv-vol", "--size", "16M")
    node.cli("vm", "disk", "attach", vm, "--volume", f"{pool.name}/pv-vol")
    wait_guest_size(node, vm, "vdb", 16 * MIB)
    node.cli("vm", "disk", "detach", vm, "--volume", f"{pool.name}/pv-vol")
    wait_guest_size(node, vm, "vdb", None)
    node.cli("volume", "delete", f"{pool.name}/pv-vol")

    # The pool holds root disks: it cannot be deleted.
    assert f"root disks of VMs {vm}" in _refused(node, "storage", "pool", "delete", pool.name)

    # A linked clone stays in the pool: O(1), RBD layering or a qcow2 overlay.
    assert "stop it before cloning" in _refused(node, "vm", "clone", vm, clone)
    node.cli("vm", "stop", vm)
    node.cli("vm", "clone", vm, clone, "--linked")
    if pool.ceph is not None:
        frozen = f"base.{vm}.{clone}"
        assert pool.rbd_info(f"vm.{clone}")["parent"]["image"] == frozen
        assert pool.rbd_info(f"vm.{vm}")["parent"]["image"] == frozen
        assert pool.rbd_info(frozen)["parent"]["image"] == "img.tiny"
    else:
        assert _root_source(node, clone) == str(pool.path / ".vms" / f"{clone}.qcow2")
        assert f".bases/{vm}@{clone}.qcow2" in pool.images()
    _boot(node, clone)
    assert guest_sh(node, clone, "cat /root/f") == "pool-data"
    node.cli("vm", "delete", vm)  # the source goes first: the clone keeps the base alive
    assert guest_sh(node, clone, "cat /root/f; sync") == "pool-data"
    node.cli("vm", "delete", clone, "--force")
    assert pool.images() == []  # nothing left: disks, frozen base, image copy


@pytest.fixture()
def rbd_pool(node: Node, request: pytest.FixtureRequest) -> Iterator[PoolUnderTest]:
    made = _make_pool(node, request, "rbd")
    try:
        yield made
    finally:
        _drop_pool(node, made, ["pv-src", "pv-full", "pv-tpl-vm"])
        node.cli("template", "delete", "pv-tpl", check=False)


def test_rbd_templates_full_clones_and_refusals(node: Node, rbd_pool: PoolUnderTest) -> None:
    pool, src, full, from_tpl = rbd_pool, "pv-src", "pv-full", "pv-tpl-vm"
    node.cli("vm", "create", src, "--image", "tiny", "--memory", "128M", "--pool", pool.name,
             "--start")
    _boot(node, src, start=False)
    guest_sh(node, src, "echo rbd-data > /root/f; sync; echo ok")
    # Internal snapshots need qcow2: an RBD-rooted VM's are refused, naming the pool.
    refused = _refused(node, "vm", "snapshot", "create", src, "s1")
    assert "conflict" in refused and "RBD image in pool pv-rbd" in refused
    node.cli("vm", "stop", src)
    ova = _refused(node, "vm", "export", src, "--ova", str(node.data_dir.parent / "pv.ova"))
    assert "default pool only" in ova

    node.cli("vm", "clone", src, full, "--full")
    assert "parent" not in pool.rbd_info(f"vm.{full}")  # an independent copy

    node.cli("template", "create", "pv-tpl", "--from-vm", src)
    templates: Any = node.cli_json("template", "list")
    assert [(t["name"], t["template_vm"]) for t in templates] == [("pv-tpl", src)]
    assert "not found" in _refused(node, "template", "delete", "tiny")  # an image, no template
    node.cli("vm", "create", from_tpl, "--template", "pv-tpl", "--memory", "128M",
             "--pool", pool.name)
    parent = pool.rbd_info(f"vm.{from_tpl}")["parent"]
    assert (parent["image"], parent["snapshot"]) == ("img.pv-tpl", "base")

    for vm in (full, from_tpl):
        _boot(node, vm)
        assert guest_sh(node, vm, "cat /root/f") == "rbd-data", vm
        node.cli("vm", "stop", vm, "--force")

    in_use = _refused(node, "image", "delete", "tiny")
    assert "used by VMs" in in_use and src in in_use and full in in_use
    assert from_tpl in _refused(node, "template", "delete", "pv-tpl")
    for vm in (src, full, from_tpl):
        node.cli("vm", "delete", vm)
    node.cli("template", "delete", "pv-tpl")
    assert pool.images() == []


def test_clone_copies_every_nic_and_the_pool_choice_is_checked(node: Node) -> None:
    src, clone = "pv-nics", "pv-nics-c"
    try:
        node.cli("vm", "create", src, "--image", "tiny", "--memory", "128M")
        node.cli("vm", "nic", "add", src, "--network", "default")
        node.cli("vm", "clone", src, clone)
        nics: Any = node.cli_json("vm", "nic", "list", src)
        copies: Any = node.cli_json("vm", "nic", "list", clone)
        assert len(nics) == len(copies) == 2
        assert [n["network"] for n in copies] == [n["network"] for n in nics]
        assert not {n["mac"] for n in copies} & {n["mac"] for n in nics}
        shown: Any = node.cli_json("vm", "show", clone)
        assert shown["pool"] == "default" and shown["mac"] == copies[0]["mac"]
    finally:
        node.cli("vm", "delete", clone, check=False)
        node.cli("vm", "delete", src, check=False)
    missing = _refused(node, "vm", "create", "pv-x", "--image", "tiny", "--pool", "nope")
    assert "[pool]" in missing and "not found" in missing
    bad = _refused(node, "vm", "create", "pv-x", "--image", "tiny", "--pool", "../x")
    assert "[pool]" in bad
