"""Specs shared by the domainxml tests, each with an expected-output file in data/.

Regenerate the expected files after an intended change with
``CORRAL_REGENERATE_OUTPUT=1 pytest tests/unit/domainxml`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.domainxml import DiskSpec, DomainSpec, NicSpec

DATA = Path(__file__).parent / "data"
REGENERATE = os.environ.get("CORRAL_REGENERATE_OUTPUT") == "1"


def assert_matches_file(text: str, name: str) -> None:
    """Compare ``text`` with data/``name`` (or write it when regenerating)."""
    path = DATA / name
    if REGENERATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with CORRAL_REGENERATE_OUTPUT=1"
    assert text == path.read_text(), f"output differs from {path}"


KVM_FULL = DomainSpec(
    name="web-1",
    uuid="6508E6F2-EFA6-4820-9E4B-ACB4C1C7D849",
    vm_id="vm-01hzx3k7q2",
    vcpus=2,
    memory_mib=2048,
    virt_type="kvm",
    disks=[
        DiskSpec("/var/lib/corral/pools/default/web-1-root.qcow2"),
        DiskSpec("/var/lib/corral/pools/default/web-1-seed.iso", format="raw", device="cdrom"),
        DiskSpec("/var/lib/corral/pools/default/web-1-data.raw", format="raw"),
        DiskSpec("/dev/vg0/web-1-logs", format="raw", bus="scsi"),
    ],
    nics=[
        NicSpec("52:54:00:AB:CD:01", "corralbr0"),
        NicSpec("52:54:00:ab:cd:02", "br-storage.10"),
    ],
    console_log="/var/log/corral/console/web-1.log",
)

QEMU_TINY = DomainSpec(
    name="tiny",
    uuid="0b3c5a56-4e36-4d56-9a3b-6d2c2f6b8f10",
    vm_id="vm-tiny",
    vcpus=1,
    memory_mib=128,
    virt_type="qemu",
    disks=[DiskSpec("/var/lib/corral/images/tiny-root.img", format="raw")],
    nics=[NicSpec("52:54:00:00:00:01", "corralbr0")],
    console_log="/var/log/corral/console/tiny.log",
    kernel="/var/lib/corral/images/tiny/vmlinuz",
    initrd="/var/lib/corral/images/tiny/initrd.img",
    cmdline="console=ttyS0 root=/dev/vda rw quiet",
    vnc=False,
)

IDE_PC = DomainSpec(
    name="legacy",
    uuid="7f1d7e0e-7c29-4a57-8d55-2b8b1d3f1c22",
    vm_id="vm-legacy",
    vcpus=1,
    memory_mib=512,
    virt_type="qemu",
    disks=[
        DiskSpec("/srv/legacy.qcow2", bus="ide"),
        DiskSpec("/srv/install.iso", format="raw", device="cdrom", bus="ide"),
        DiskSpec("/srv/scratch.qcow2", bus="scsi"),
    ],
    nics=[],
)

# A VM with storage volumes attached: targets kept by the volumes, one of them an RBD image.
ATTACHED_VOLUMES = DomainSpec(
    name="vols",
    uuid="3c1e0d52-8f9a-4a77-9a56-0f4c8a1d2e33",
    vm_id="vm-vols",
    vcpus=1,
    memory_mib=256,
    virt_type="qemu",
    disks=[
        DiskSpec("/var/lib/corral/agent/storage/vms/vols.qcow2"),
        DiskSpec("/srv/pools/fast/data.qcow2", target="vdc"),
        DiskSpec("rbd/vols-db", format="raw", target="vdb", protocol="rbd",
                 hosts=(("10.209.7.2", 6789), ("10.209.8.2", 6789))),
        DiskSpec("/srv/pools/fast/scratch.raw", format="raw", bus="scsi", target="sdb"),
        DiskSpec("/var/lib/corral/agent/storage/vms/vols-cidata.iso", format="raw",
                 device="cdrom", bus="scsi", readonly=True),
    ],
    nics=[],
)

# Windows 11's needs: UEFI with Secure Boot, a TPM 2.0; a topology and a boot order asked.
UEFI_SECURE_TPM = DomainSpec(
    name="win11",
    uuid="5a0f8c1e-2b7d-4c33-9e61-7d2a4b8c9f01",
    vm_id="vm-win11",
    vcpus=4,
    memory_mib=4096,
    virt_type="kvm",
    disks=[
        DiskSpec("/var/lib/corral/agent/storage/vms/win11.qcow2"),
        DiskSpec("/var/lib/corral/agent/storage/images/win11.iso", format="raw",
                 device="cdrom", bus="sata", readonly=True),
    ],
    nics=[NicSpec("52:54:00:00:11:01", "corralbr0")],
    firmware="uefi",
    secure_boot=True,
    nvram="/var/lib/corral/agent/storage/vms/win11.nvram.fd",
    tpm=True,
    boot=("cdrom", "hd"),
    topology=(1, 2, 2),
)

# UEFI without Secure Boot on i440fx; libvirt keeps the NVRAM in its own place.
UEFI_PC = DomainSpec(
    name="appliance",
    uuid="9d4c2e7a-1f3b-4e8d-a6c5-0b7e9f2d4a13",
    vm_id="vm-appliance",
    vcpus=2,
    memory_mib=1024,
    virt_type="qemu",
    disks=[DiskSpec("/srv/appliance.qcow2")],
    nics=[],
    machine="pc",
    firmware="uefi",
    tpm=True,
    boot=("network", "hd"),
)

# vCPU and memory hot-plug on the tiny guest: room for a second vCPU, memory up to 1 GiB.
MEMORY_HOTPLUG = DomainSpec(
    name="grow",
    uuid="2e6b1f0a-5c3d-4b7e-8a91-3f2d6c7e8b45",
    vm_id="vm-grow",
    vcpus=1,
    max_vcpus=2,
    memory_mib=256,
    current_memory_mib=192,
    memory_max_mib=1024,
    virt_type="qemu",
    disks=[DiskSpec("/var/lib/corral/agent/storage/vms/grow.qcow2")],
    nics=[],
    kernel="/var/lib/corral/images/tiny/vmlinuz",
    initrd="/var/lib/corral/images/tiny/initrd.img",
    cmdline="console=ttyS0 root=/dev/vda rw quiet",
    vnc=False,
)

# Placed on a two-node host: vCPUs pinned one to one (emulator threads on the other CPUs),
# two guest cells bound to the host's nodes, memory on 2M huge pages; cells split unevenly
# (3 vCPUs, 1030 MiB = 515 pages: 2+1 vCPUs, 258+257 pages).
PLACED = DomainSpec(
    name="placed",
    uuid="8c2d4e6f-1a3b-4c5d-9e7f-0a1b2c3d4e5f",
    vm_id="vm-placed",
    vcpus=3,
    memory_mib=1030,
    virt_type="kvm",
    disks=[DiskSpec("/var/lib/corral/agent/storage/vms/placed.qcow2")],
    nics=[],
    vnc=False,
    vcpu_pins=(4, 5, 12),
    emulator_cpus=(0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 13, 14, 15),
    numa_cells=2,
    numa_nodes=(0, 1),
    hugepage_kib=2048,
)

# A VM that resets itself when its guest hangs (i6300esb watchdog), with a virtio video card.
WATCHDOG_VIDEO = DomainSpec(
    name="kiosk",
    uuid="4f7a9c2e-6b1d-4e3f-8a5c-9d0e1f2a3b4c",
    vm_id="vm-kiosk",
    vcpus=1,
    memory_mib=512,
    virt_type="qemu",
    disks=[DiskSpec("/var/lib/corral/agent/storage/vms/kiosk.qcow2")],
    nics=[NicSpec("52:54:00:00:22:01", "corralbr0")],
    video="virtio",
    watchdog="reset",
)

DESIGNED: dict[str, DomainSpec] = {
    "designed_watchdog_video.xml": WATCHDOG_VIDEO,
    "designed_placed.xml": PLACED,
    "designed_memory_hotplug.xml": MEMORY_HOTPLUG,
    "designed_uefi_secure_tpm.xml": UEFI_SECURE_TPM,
    "designed_uefi_pc.xml": UEFI_PC,
    "designed_kvm_full.xml": KVM_FULL,
    "designed_qemu_tiny.xml": QEMU_TINY,
    "designed_ide_pc.xml": IDE_PC,
    "designed_attached_volumes.xml": ATTACHED_VOLUMES,
}
