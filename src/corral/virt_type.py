"""Decide once whether guests run with KVM or with TCG (software emulation).

KVM is used when /dev/kvm opens and a probe guest (a 512-byte boot sector that writes to
the serial port) runs on it. Inside a virtual machine (nested virtualization) KVM often
starts but hangs during a Linux guest's boot, so corral prefers TCG there and says so;
``CORRAL_VIRT_TYPE=kvm|qemu`` overrides the choice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class VirtType(StrEnum):
    KVM = "kvm"
    QEMU = "qemu"  # libvirt's name for TCG


@dataclass(frozen=True)
class VirtChoice:
    type: VirtType
    note: str


# mov dx,0x3f8; mov al,'K'; out dx,al; mov al,10; out dx,al; cli; hlt; jmp -3
_PROBE_CODE = bytes.fromhex("baf803b04bee b00aee faf4 ebfd".replace(" ", ""))
_PROBE_SECTOR = _PROBE_CODE + bytes(510 - len(_PROBE_CODE)) + b"\x55\xaa"


def _nested() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and " hypervisor" in line for line in flags.splitlines())


def _kvm_probe(timeout: float = 8.0) -> bool:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return False
    with tempfile.TemporaryDirectory(prefix="corral-kvm-probe-") as tmp:
        sector = Path(tmp, "probe.img")
        sector.write_bytes(_PROBE_SECTOR)
        argv = [
            qemu, "-accel", "kvm", "-m", "16", "-display", "none", "-nodefaults",
            "-serial", "stdio", "-monitor", "none", "-no-reboot",
            "-drive", f"format=raw,file={sector},if=floppy",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return b"K" in out


def detect_virt_type() -> VirtChoice:
    forced = os.environ.get("CORRAL_VIRT_TYPE", "").strip().lower()
    if forced in ("kvm", "qemu"):
        return VirtChoice(VirtType(forced), f"set by CORRAL_VIRT_TYPE={forced}")
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return VirtChoice(VirtType.QEMU, f"/dev/kvm unusable ({exc.strerror}): using TCG, slower")
    if _nested():
        return VirtChoice(
            VirtType.QEMU,
            "this host is itself a virtual machine: nested KVM hangs guest boots on such "
            "hosts, so corral uses TCG (set CORRAL_VIRT_TYPE=kvm to force KVM)",
        )
    if not _kvm_probe():
        return VirtChoice(VirtType.QEMU, "a KVM probe guest did not run: using TCG, slower")
    return VirtChoice(VirtType.KVM, "KVM works")
