"""Placement on a real host: a pinned vCPU shows in `virsh vcpupin` and in the affinity of
QEMU's vCPU thread (the emulator threads on the other CPUs), two guest NUMA cells show in
the guest's /sys/devices/system/node (unbound: the host has fewer nodes), and huge pages
are refused with a clear 409 while the host has none free, then back a guest once a few
are reserved."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from nodeutil import Node, wait_for

from corral.cpulist import format_cpu_list, parse_cpu_list
from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration

ONLINE = Path("/sys/devices/system/cpu/online")
NR_2M = Path("/proc/sys/vm/nr_hugepages")  # the default huge page size: 2M on x86-64
FREE_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
FREE_1G = Path("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages")


@contextlib.contextmanager
def _vm(node: Node, name: str, *args: str) -> Iterator[None]:
    node.cli("vm", "create", name, "--image", "tiny", *args)
    try:
        yield
    finally:
        node.cli("vm", "delete", name, "--force", check=False)


def _qemu_pid(node: Node, name: str) -> int:
    """QEMU's pid, from the lab host's own /var/run/libvirt (same pid namespace as ours)."""
    out = node.host.run(["cat", f"/var/run/libvirt/qemu/{name}.pid"]).stdout
    return int(out.strip())


def _threads(pid: int) -> dict[str, str]:
    """Thread name -> its allowed CPUs (Cpus_allowed_list), for QEMU's threads."""
    out: dict[str, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread may end while we read
            comm = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
            found = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
            if found:
                out.setdefault(comm, found.group(1))
    return out


def test_a_pinned_vcpu_runs_only_on_its_host_cpu(node: Node) -> None:
    online = parse_cpu_list(ONLINE.read_text())
    assert len(online) >= 2, "pinning apart from the emulator needs two host CPUs"
    pin, others = online[-1], format_cpu_list(online[:-1])
    # what the agent reports of this host
    host = node.cli_json("status")["hosts"][0]  # type: ignore[index]
    assert host["cpu_list"] == format_cpu_list(online)
    assert [n["id"] for n in host["numa_nodes"]] == sorted(
        int(p.name[4:]) for p in Path("/sys/devices/system/node").glob("node[0-9]*"))
    node0 = format_cpu_list(parse_cpu_list(
        Path("/sys/devices/system/node/node0/cpulist").read_text()))
    assert f"NUMA node 0: CPUs {node0}, " in node.cli("status").stdout

    refused = node.cli("vm", "create", "badpin", "--image", "tiny", "--cpu-pin",
                       f"{pin},{online[-1] + 1}", "--cpus", "2", check=False)
    assert refused.returncode != 0
    assert f"host CPUs {online[-1] + 1} that host" in refused.stderr

    with _vm(node, "pin1", "--memory", "128M", "--cpu-pin", str(pin), "--start"):
        wait_for("pin1 to boot", lambda: BOOT_MARKER in node.console_log("pin1"), timeout=180)
        shown = node.cli_json("vm", "show", "pin1")
        assert shown["hardware"]["cpu_pin"] == str(pin)  # type: ignore[index]
        vcpupin = node.virsh("vcpupin", "pin1")
        assert re.search(rf"^\s*0\s+{pin}\s*$", vcpupin, re.M), vcpupin
        emulatorpin = node.virsh("emulatorpin", "pin1")
        assert re.search(rf"\*:\s+{re.escape(others)}\s*$", emulatorpin, re.M), emulatorpin
        threads = _threads(_qemu_pid(node, "pin1"))
        vcpu = [name for name in threads if re.fullmatch(r"CPU 0/(TCG|KVM)", name)]
        assert vcpu, f"no vCPU thread among {sorted(threads)}"
        assert threads[vcpu[0]] == str(pin)  # what `taskset -cp TID` prints
        assert threads["qemu-system-x86"] == others  # the main (emulator) thread

        # unpinned at its next start: the running domain keeps its pins until then
        node.cli("vm", "set", "pin1", "--cpu-pin", "none")
        assert node.cli_json("vm", "show", "pin1")["pending"] == ["hardware.cpu_pin"]  # type: ignore[index]
        assert re.search(rf"^\s*0\s+{pin}\s*$", node.virsh("vcpupin", "pin1"), re.M)
        assert "<cputune>" not in node.virsh("dumpxml", "--inactive", "pin1")


def test_two_guest_numa_cells_on_a_one_node_host(node: Node) -> None:
    with _vm(node, "numa2", "--cpus", "2", "--memory", "256M", "--numa", "2", "--start"):
        wait_for("numa2 to boot", lambda: BOOT_MARKER in node.console_log("numa2"),
                 timeout=240)
        live = etree.fromstring(node.virsh("dumpxml", "numa2").encode())
        assert [(c.get("cpus"), c.get("memory")) for c in live.findall("cpu/numa/cell")] == \
            [("0", "131072"), ("1", "131072")]
        hosts_nodes = len(list(Path("/sys/devices/system/node").glob("node[0-9]*")))
        if hosts_nodes < 2:  # cells are the guest's topology only: nothing to bind them to
            assert live.find("numatune") is None
        answer = node.console_run("numa2", "ls /sys/devices/system/node")
        assert answer.status == 0
        assert sorted(w for w in answer.output.split() if w.startswith("node")) == \
            ["node0", "node1"]


@contextlib.contextmanager
def _reserved_2m(count: int) -> Iterator[None]:
    """``count`` 2M huge pages reserved on the machine; the old reservation put back."""
    old = NR_2M.read_text().strip()
    try:
        NR_2M.write_text(f"{count}\n")
        yield
    finally:
        NR_2M.write_text(f"{old}\n")


def test_huge_pages_refused_when_none_are_free_and_used_when_reserved(node: Node) -> None:
    if FREE_1G.exists() and int(FREE_1G.read_text()) == 0:
        refused = node.cli("vm", "create", "hp1g", "--image", "tiny", "--memory", "1G",
                           "--hugepages", "1G", "--start", check=False)
        assert refused.returncode != 0
        assert "needs 1 free 1G huge pages (1024 MiB)" in refused.stderr, refused.stderr
        assert "hp1g" not in node.cli("vm", "list").stdout

    with _reserved_2m(0):
        if int(FREE_2M.read_text()) == 0:  # pages in use elsewhere stay: then skip this part
            with _vm(node, "hp2m", "--memory", "128M", "--hugepages", "2M"):
                refused = node.cli("vm", "start", "hp2m", check=False)
                assert refused.returncode != 0
                assert "needs 64 free 2M huge pages (128 MiB)" in refused.stderr, \
                    refused.stderr
                assert node.virsh("domstate", "hp2m") == "shut off"

    with _reserved_2m(int(NR_2M.read_text()) + 64):
        free = int(FREE_2M.read_text())
        assert free >= 64, f"the kernel reserved only {free} free 2M pages"
        with _vm(node, "hp2m", "--memory", "128M", "--hugepages", "2M", "--start"):
            wait_for("hp2m to boot on huge pages",
                     lambda: BOOT_MARKER in node.console_log("hp2m"), timeout=180)
            live = etree.fromstring(node.virsh("dumpxml", "hp2m").encode())
            assert live.find("memoryBacking/hugepages/page").get("size") == "2048"  # type: ignore[union-attr]
            cmdline = Path(f"/proc/{_qemu_pid(node, 'hp2m')}/cmdline").read_bytes()
            assert b"hugepages/2048kB" in cmdline  # its memory is a file on the hugetlbfs
            assert int(FREE_2M.read_text()) <= free - 64  # QEMU took its 64 pages
