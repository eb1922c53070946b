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

DESIGNED: dict[str, DomainSpec] = {
    "designed_uefi_secure_tpm.xml": UEFI_SECURE_TPM,
    "designed_uefi_pc.xml": UEFI_PC,
    "designed_kvm_full.xml": KVM_FULL,
    "designed_qemu_tiny.xml": QEMU_TINY,
    "designed_ide_pc.xml": IDE_PC,
    "designed_attached_volumes.xml": ATTACHED_VOLUMES,
}
