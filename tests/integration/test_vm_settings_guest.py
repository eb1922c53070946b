"""`corral vm set` on a running tiny guest, checked from inside it: a vCPU plugged in shows
in /sys/devices/system/cpu/online, the balloon and a DIMM plugged in show in
/proc/meminfo, firmware is refused while it runs, and what waits for the next start is
pending until a stop and start, then seen by the guest."""

from __future__ import annotations

import pytest
from lxml import etree
from nodeutil import Node, wait_for

from corral.api import HardwarePatch, VmPatch
from corral.errors import WrongState
from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration

VM = "grow"
MIB = 1024  # KiB
# A named model QEMU emulates under TCG, unlike its default (qemu64): the guest names it.
CPU_MODEL, CPU_NAME = "Westmere", "Westmere"


def _guest(node: Node, command: str) -> str:
    answer = node.console_run(VM, command, timeout=60)
    assert answer.status == 0, f"{command!r} in the guest: {answer}"
    return answer.output


def _mem_total_kib(node: Node) -> int:
    """MemTotal of the guest's /proc/meminfo: what it has, less what the balloon holds."""
    return int(_guest(node, "grep MemTotal /proc/meminfo").split()[1])


def _cpus_online(node: Node) -> str:
    return _guest(node, "cat /sys/devices/system/cpu/online")


def _show(node: Node) -> dict[str, object]:
    shown = node.cli_json("vm", "show", VM)
    assert isinstance(shown, dict)
    return shown


def _booted(node: Node, boots: int = 1) -> None:
    """Wait for the guest's ``boots``-th boot marker (the console log keeps every boot's)."""
    wait_for(f"{VM} to boot", lambda: node.console_log(VM).count(BOOT_MARKER) >= boots,
             timeout=180)


def test_vm_set_is_seen_by_the_running_guest(node: Node) -> None:
    node.cli("vm", "create", VM, "--image", "tiny", "--cpus", "1", "--cpu-max", "2",
             "--memory", "256M", "--memory-max", "1G", "--graphics", "none", "--start")
    try:
        _booted(node)
        live = etree.fromstring(node.virsh("dumpxml", VM).encode())
        assert live.find("maxMemory").get("slots") == "16"  # type: ignore[union-attr]
        assert len(live.findall("cpu/numa/cell")) == 1  # libvirt plugs DIMMs into a cell
        assert _cpus_online(node) == "0"
        full = _mem_total_kib(node)

        # vCPU hot-plug: the guest onlines the new CPU as udev would
        node.cli("vm", "set", VM, "--cpus", "2")
        wait_for("the guest to online its second vCPU", lambda: _cpus_online(node) == "0-1",
                 timeout=60, every=1)

        # the balloon takes 64 MiB away, then gives it back
        node.cli("vm", "set", VM, "--memory-target", "192M")
        wait_for("the balloon to take 64 MiB",
                 lambda: _mem_total_kib(node) <= full - 63 * MIB, timeout=60, every=1)
        node.cli("vm", "set", VM, "--memory-target", "full")
        wait_for("the balloon to give it back",
                 lambda: _mem_total_kib(node) >= full - MIB, timeout=60, every=1)

        # memory hot-plug: a 128 MiB DIMM, onlined by the guest
        node.cli("vm", "set", VM, "--memory", "384M")
        wait_for("the guest to online 128 MiB more",
                 lambda: _mem_total_kib(node) >= full + 127 * MIB, timeout=60, every=1)
        shown = _show(node)
        assert (shown["memory_mib"], shown["cpus"], shown["pending"]) == (384, 2, [])
        unaligned = node.cli("vm", "set", VM, "--memory", "400M", check=False)
        assert unaligned.returncode == 2 and "steps of 128 MiB" in unaligned.stderr

        # firmware needs a stopped VM: 409, and nothing changes
        refused = node.cli("vm", "set", VM, "--firmware", "uefi", check=False)
        assert refused.returncode == 2 and "only change while it is stopped" in refused.stderr
        with node.client() as c, pytest.raises(WrongState) as err:
            c.update_vm(VM, VmPatch(hardware=HardwarePatch(firmware="uefi")))
        assert err.value.status == 409
        hardware = _show(node)["hardware"]
        assert isinstance(hardware, dict) and hardware["firmware"] == "bios"

        # less memory and another CPU model wait for the next start
        node.cli("vm", "set", VM, "--memory", "256M", "--cpu-model", CPU_MODEL)
        assert sorted(_show(node)["pending"]) == ["hardware.cpu_model", "memory"]  # type: ignore[arg-type]
        assert _mem_total_kib(node) >= full + 127 * MIB  # the guest keeps its DIMM meanwhile
        node.cli("vm", "stop", VM, "--timeout", "60")
        node.cli("vm", "start", VM)
        _booted(node, boots=2)
        assert _show(node)["pending"] == []
        assert abs(_mem_total_kib(node) - full) < 4 * MIB  # booted with 256 MiB again
        assert _cpus_online(node) == "0-1"
        assert CPU_NAME in _guest(node, "grep -m1 'model name' /proc/cpuinfo")
    finally:
        node.cli("vm", "delete", VM, "--force")
