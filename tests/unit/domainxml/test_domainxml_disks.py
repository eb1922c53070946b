"""Disks of storage volumes in the designer: kept targets, RBD network disks, hot-plug ports."""

from __future__ import annotations

import dataclasses

import pytest
from domainxml_specs import ATTACHED_VOLUMES, IDE_PC, QEMU_TINY, assert_matches_file

from corral.domainxml import Disk, DiskSpec, Domain, design_disk, design_domain
from corral.errors import InvalidInput

RBD = DiskSpec("rbd/web-db", format="raw", target="vdc", protocol="rbd",
               hosts=(("10.209.7.2", 6789), ("ceph-mon-b.lab", 3300)))


def test_hotplugged_rbd_disk_matches_expected_file() -> None:
    assert_matches_file(design_disk(RBD).to_xml(), "designed_disk_rbd.xml")


def test_rbd_disk_reads_back_through_the_model() -> None:
    disk = Disk.from_xml(design_disk(RBD).to_xml())
    assert (disk.type, disk.source_protocol, disk.source_name) == ("network", "rbd", "rbd/web-db")
    assert disk.source_path == "rbd/web-db"
    assert disk.source_hosts == [("10.209.7.2", 6789), ("ceph-mon-b.lab", 3300)]
    assert (disk.target_dev, disk.target_bus, disk.driver_type) == ("vdc", "virtio", "raw")
    disk.source_hosts = [("10.0.0.9", None)]
    assert disk.source_hosts == [("10.0.0.9", None)]
    assert '<host name="10.0.0.9"/>' in disk.to_xml()


def test_file_volume_on_scsi_keeps_its_target() -> None:
    disk = design_disk(DiskSpec("/srv/pool/data.qcow2", bus="scsi", target="sdc"))
    assert (disk.type, disk.source_file, disk.target_dev, disk.target_bus) == (
        "file", "/srv/pool/data.qcow2", "sdc", "scsi")
    assert disk.driver_discard == "unmap"


def test_auto_targets_skip_the_targets_volumes_keep() -> None:
    disks = design_domain(ATTACHED_VOLUMES).devices.disks
    assert [(d.target_dev, d.source_path) for d in disks] == [
        ("vda", "/var/lib/corral/agent/storage/vms/vols.qcow2"),
        ("vdc", "/srv/pools/fast/data.qcow2"),
        ("vdb", "rbd/vols-db"),
        ("sdb", "/srv/pools/fast/scratch.raw"),
        ("sda", "/var/lib/corral/agent/storage/vms/vols-cidata.iso"),
    ]
    auto = dataclasses.replace(QEMU_TINY, disks=[DiskSpec("/a.qcow2", target="vda"),
                                                 DiskSpec("/b.qcow2"), DiskSpec("/c.qcow2")])
    assert [d.target_dev for d in design_domain(auto).devices.disks] == ["vda", "vdb", "vdc"]


@pytest.mark.parametrize(
    ("disk", "field"),
    [
        (DiskSpec("/a.qcow2"), "disk.target"),
        (DiskSpec("/a.qcow2", target="vdb", bus="scsi"), "disk.target"),
        (DiskSpec("/a.qcow2", target="xvda"), "disk.target"),
        (DiskSpec("rbd/x", target="vdb", protocol="nbd", hosts=(("h", 1),)), "disk.protocol"),
        (DiskSpec("rbd/x", target="vdb", protocol="rbd"), "disk.hosts"),
        (DiskSpec("../x", target="vdb", protocol="rbd", hosts=(("h", 1),)), "disk.path"),
        (DiskSpec("rbd/x y", target="vdb", protocol="rbd", hosts=(("h", 1),)), "disk.path"),
        (DiskSpec("rbd/x", target="vdb", protocol="rbd", hosts=(("h", 0),)), "disk.hosts"),
        (DiskSpec("rbd/x", target="vdb", protocol="rbd", hosts=(("a b", 1),)), "disk.hosts"),
        (DiskSpec("/a.qcow2", target="vdb", hosts=(("h", 1),)), "disk.hosts"),
        (DiskSpec("relative.qcow2", target="vdb"), "disk.path"),
    ],
)
def test_bad_disks_are_refused_naming_the_field(disk: DiskSpec, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        design_disk(disk)
    assert exc.value.field == field


def test_two_disks_with_one_target_are_refused() -> None:
    spec = dataclasses.replace(QEMU_TINY, disks=[DiskSpec("/a.qcow2", target="vdb"),
                                                 DiskSpec("/b.qcow2", target="vdb")])
    with pytest.raises(InvalidInput) as exc:
        design_domain(spec)
    assert exc.value.field == "disks"


def _ports(dom: Domain) -> list[int | None]:
    return [c.index for c in dom.devices.controllers if c.model == "pcie-root-port"]


def test_q35_gets_free_pcie_ports_for_hotplug() -> None:
    dom = design_domain(QEMU_TINY)
    roots = [c for c in dom.devices.controllers if c.model == "pcie-root"]
    assert [(c.type, c.index) for c in roots] == [("pci", 0)]
    # root disk, NIC, virtio-serial, balloon, RNG, USB: 6 in use, 8 free
    assert _ports(dom) == list(range(1, 15))
    fewer = design_domain(dataclasses.replace(QEMU_TINY, hotplug_ports=2))
    assert len(_ports(fewer)) == 8
    assert _ports(design_domain(dataclasses.replace(QEMU_TINY, hotplug_ports=0))) == []
    assert _ports(design_domain(IDE_PC)) == []  # pc: a flat PCI bus, hot-plug ready
    with pytest.raises(InvalidInput) as exc:
        design_domain(dataclasses.replace(QEMU_TINY, hotplug_ports=-1))
    assert exc.value.field == "hotplug_ports"
