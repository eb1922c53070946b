"""Snapshots, clones and templates on a real node (CLI, engine, agent, libvirtd, QEMU under
TCG, qemu-img): what the tiny guest reads back from its disk (a file on its ext4 root) and
from its memory (a file on its tmpfs /tmp) after each revert, the snapshot tree, clones that
boot with the source's data, and the refusals a user can hit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from nodeutil import Node, wait_for
from storageutil import guest_sh, running_vm, traversable

from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration


def _refused(node: Node, *args: str) -> str:
    proc = node.cli(*args, check=False)
    assert proc.returncode == 2, f"expected a refusal: {proc.stdout}\n{proc.stderr}"
    return proc.stderr


def _snaps(node: Node, vm: str) -> dict[str, Any]:
    rows: Any = node.cli_json("vm", "snapshot", "list", vm)
    return {r["name"]: r for r in rows}


def _state(node: Node, vm: str) -> str:
    data: Any = node.cli_json("vm", "show", vm)
    return str(data["state"])


def _storage(node: Node) -> Path:
    return node.data_dir / "agent" / "storage"


def _qemu_img_check(path: Path) -> None:
    proc = subprocess.run(["qemu-img", "check", "-U", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"qemu-img check {path.name}: {proc.stdout}{proc.stderr}"


def _revert(node: Node, vm: str, snap: str) -> None:
    traversable(node)
    node.cli("vm", "snapshot", "revert", vm, snap)


def _boot(node: Node, vm: str) -> None:
    traversable(node)
    before = node.console_log(vm).count(BOOT_MARKER)
    node.cli("vm", "start", vm)
    wait_for(f"{vm} to boot", lambda: node.console_log(vm).count(BOOT_MARKER) > before,
             timeout=120)


def test_snapshot_tree_with_memory_and_disk(node: Node) -> None:
    vm = "sn-tree"
    with running_vm(node, vm):
        assert guest_sh(node, vm, "echo one > /tmp/mem; echo one > /root/f; sync; "
                                  "cat /tmp/mem /root/f | tr '\\n' ' '") == "one one"
        node.cli("vm", "snapshot", "create", vm, "s1", "--memory", "--description", "first")
        guest_sh(node, vm, "echo two > /tmp/mem; echo two > /root/f; sync; echo ok")
        node.cli("vm", "snapshot", "create", vm, "d1")  # disk only, taken live
        guest_sh(node, vm, "echo three > /tmp/mem; echo three > /root/f; sync; echo ok")

        # Memory snapshot: disk and memory come back, the guest goes on without a reboot.
        boots = node.console_log(vm).count(BOOT_MARKER)
        _revert(node, vm, "s1")
        assert _state(node, vm) == "running"
        assert guest_sh(node, vm, "cat /tmp/mem /root/f | tr '\\n' ' '") == "one one"
        assert node.console_log(vm).count(BOOT_MARKER) == boots

        # A branch: s2 is a second child of s1, beside d1.
        node.cli("vm", "snapshot", "create", vm, "s2", "--memory")
        snaps = _snaps(node, vm)
        assert set(snaps) == {"s1", "d1", "s2"}
        assert snaps["s1"]["parent"] is None and snaps["s1"]["memory"] is True
        assert snaps["s1"]["description"] == "first"
        assert snaps["d1"]["parent"] == "s1" and snaps["d1"]["memory"] is False
        assert snaps["s2"]["parent"] == "s1" and snaps["s2"]["current"] is True
        table = node.cli("vm", "snapshot", "list", vm).stdout
        assert "└─ d1" in table and "└─ s2" in table

        # Disk-only snapshot: the disk comes back, the VM is stopped (no memory to resume).
        _revert(node, vm, "d1")
        assert _state(node, vm) == "stopped"
        _boot(node, vm)
        assert guest_sh(node, vm, "cat /root/f") == "two"

        # Deleting the root keeps both children usable; the qcow2 stays consistent.
        node.cli("vm", "snapshot", "delete", vm, "s1")
        snaps = _snaps(node, vm)
        assert set(snaps) == {"d1", "s2"} and snaps["s2"]["parent"] is None
        _revert(node, vm, "s2")
        assert guest_sh(node, vm, "cat /tmp/mem /root/f | tr '\\n' ' '") == "one one"

        # Refusals: a clear 4xx naming what is wrong.
        assert "already has a snapshot s2" in _refused(node, "vm", "snapshot", "create", vm, "s2")
        assert "no snapshot nope" in _refused(node, "vm", "snapshot", "revert", vm, "nope")
        assert "[name]" in _refused(node, "vm", "snapshot", "create", vm, "../x")
        assert "[snapshot]" in _refused(node, "vm", "snapshot", "delete", vm, "a.b")
        # Quiescing needs the guest agent (the tiny guest has none): the operation fails
        # clearly and takes no snapshot.
        proc = node.cli("vm", "snapshot", "create", vm, "q", "--quiesce", check=False)
        assert proc.returncode == 1 and "QEMU guest agent" in proc.stderr, proc.stderr
        assert "q" not in _snaps(node, vm)
        node.cli("vm", "stop", vm, "--force")
        _qemu_img_check(_storage(node) / "vms" / f"{vm}.qcow2")
        assert "needs it running" in _refused(node, "vm", "snapshot", "create", vm, "m",
                                              "--memory")
    # The VM was deleted with its snapshots (running_vm's cleanup).
    assert not node.disk_exists(vm)
    assert vm not in node.virsh("list", "--all", "--name").split()


def test_clones_and_templates(node: Node) -> None:
    traversable(node)
    src, linked, full, snap_clone, tpl, from_tpl = (
        "sn-src", "sn-linked", "sn-full", "sn-fromsnap", "sn-tpl", "sn-fromtpl")
    made = [src, linked, full, snap_clone, from_tpl]
    try:
        with running_vm(node, src):
            guest_sh(node, src, "echo source-data > /root/f; sync; echo ok")
            node.cli("vm", "snapshot", "create", src, "before", "--memory")
            guest_sh(node, src, "echo later > /root/f; sync; echo ok")
            # A running source: only a clone from a snapshot (its data never changes).
            assert "stop it before cloning" in _refused(node, "vm", "clone", src, linked)
            assert "[mode]" in _refused(node, "vm", "clone", src, snap_clone, "--linked",
                                        "--from-snapshot", "before")
            node.cli("vm", "clone", src, snap_clone, "--from-snapshot", "before")
            node.cli("vm", "stop", src, "--force")
            # Snapshots would be left behind in a frozen base: refused, use --full.
            assert "has snapshots" in _refused(node, "vm", "clone", src, linked)
            node.cli("vm", "snapshot", "delete", src, "before")
            node.cli("vm", "clone", src, linked)  # linked is the default
            node.cli("vm", "clone", src, full, "--full")
            node.cli("template", "create", tpl, "--from-vm", src)
            assert "[name]" in _refused(node, "vm", "clone", src, "../etc")
            assert "already exists" in _refused(node, "vm", "clone", src, full)
        # The source (and its disk) is gone; its linked clone keeps the frozen base alive.
        bases = list((_storage(node) / "vms" / "bases").glob("*.qcow2"))
        assert [b.name for b in bases] == [f"{src}@{linked}.qcow2"]
        node.cli("vm", "create", from_tpl, "--template", tpl, "--memory", "128M")
        vms: Any = {v["name"]: v for v in node.cli_json("vm", "list")}
        assert vms[linked]["mac"] != vms[full]["mac"]
        for vm, want in ((linked, "later"), (full, "later"), (snap_clone, "source-data"),
                         (from_tpl, "later")):
            _boot(node, vm)
            assert guest_sh(node, vm, "cat /root/f") == want, vm
            node.cli("vm", "stop", vm, "--force")
            _qemu_img_check(_storage(node) / "vms" / f"{vm}.qcow2")
        assert "used by VMs" in _refused(node, "image", "delete", tpl)
        node.cli("vm", "delete", linked)
        assert not list((_storage(node) / "vms" / "bases").glob("*"))  # last user gone
    finally:
        for vm in made:
            node.cli("vm", "delete", vm, "--force", check=False)
        node.cli("image", "delete", tpl, check=False)


def _qemu_pid(node: Node, vm: str) -> int | None:
    """The QEMU of this node's domain (libvirt's pid file inside the lab host: other test
    sessions on this machine may run a VM of the same name)."""
    proc = node.host.run(["cat", f"/var/run/libvirt/qemu/{vm}.pid"], check=False, timeout=10)
    text = proc.stdout.strip()
    return int(text) if text.isdigit() else None


def test_host_crash_mid_snapshot_loses_no_written_data(node: Node) -> None:
    """QEMU is killed (SIGKILL, as a host crash would) while a memory snapshot is being
    saved (the guest is paused for it): the qcow2 stays consistent (`qemu-img check`: no
    corruption; leaked clusters are harmless) and the data the guest had synced is there."""
    import libvirt

    vm = "sn-crash"
    with running_vm(node, vm):
        guest_sh(node, vm, "dd if=/dev/urandom of=/root/big bs=1M count=8 2>/dev/null; "
                           "echo durable > /root/f; sync; echo ok")
        want = guest_sh(node, vm, "md5sum /root/big | cut -c1-32")
        pid = _qemu_pid(node, vm)
        assert pid is not None
        conn = libvirt.open(node.host.libvirt_uri())
        try:
            dom = conn.lookupByName(vm)
            op = node.cli_json("vm", "snapshot", "create", vm, "crash", "--memory", "--no-wait")
            deadline = time.monotonic() + 30
            while dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED and time.monotonic() < deadline:
                time.sleep(0.002)
            mid = dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
            os.kill(pid, signal.SIGKILL)
        finally:
            conn.close()
        assert mid, "the snapshot never paused the guest"
        op_id = op["id"] if isinstance(op, dict) else ""
        with node.client() as c:
            done = c.wait_quiet(op_id, timeout=120)
        assert done.status.value == "failure"  # the snapshot itself is lost with the host
        assert "crash" not in _snaps(node, vm)
        wait_for(f"{vm} to be seen stopped",
                 lambda: _state(node, vm) in ("stopped", "crashed"), timeout=60)
        disk = _storage(node) / "vms" / f"{vm}.qcow2"
        check = subprocess.run(["qemu-img", "check", str(disk)], capture_output=True, text=True,
                               timeout=60, check=False)
        assert check.returncode in (0, 3), f"qcow2 corrupted: {check.stdout}{check.stderr}"
        _boot(node, vm)
        assert guest_sh(node, vm, "cat /root/f") == "durable"
        assert guest_sh(node, vm, "md5sum /root/big | cut -c1-32") == want
