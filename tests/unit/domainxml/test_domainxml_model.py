"""The typed model: properties, lazy children, ordering, and lossless read-modify-write."""

from __future__ import annotations

import pytest
from domainxml_specs import DATA, assert_matches_file
from lxml import etree

from corral.domainxml import (
    CORRAL_NS,
    Disk,
    Domain,
    Interface,
    Timer,
)
from corral.errors import InvalidInput

LIVE = (DATA / "libvirt_live.xml").read_text()


def canonical(xml: str) -> bytes:
    """Whitespace-insensitive canonical form, to compare documents for equality."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=False)
    return etree.tostring(etree.fromstring(xml.encode(), parser), method="c14n")


# -- building ------------------------------------------------------------------------


def test_build_in_any_order_writes_libvirt_order() -> None:
    dom = Domain()
    dom.on_crash = "destroy"
    dom.devices.emulator = "/usr/bin/qemu-system-x86_64"
    dom.vcpu = 1
    dom.os.cmdline = "console=ttyS0"
    dom.os.kernel = "/k"
    dom.os.type = "hvm"
    dom.memory_kib = 65536
    dom.vm_id = "vm-1"
    dom.name = "n"
    dom.type = "qemu"
    assert dom.to_xml() == (
        '<domain type="qemu">\n'
        "  <name>n</name>\n"
        "  <metadata>\n"
        f'    <corral:vm xmlns:corral="{CORRAL_NS}" id="vm-1"/>\n'
        "  </metadata>\n"
        '  <memory unit="KiB">65536</memory>\n'
        "  <vcpu>1</vcpu>\n"
        "  <os>\n"
        "    <type>hvm</type>\n"
        "    <kernel>/k</kernel>\n"
        "    <cmdline>console=ttyS0</cmdline>\n"
        "  </os>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
        "  </devices>\n"
        "</domain>\n"
    )


def test_devices_are_placed_in_libvirt_order() -> None:
    dom = Domain()
    nic = Interface()
    nic.mac = "52:54:00:00:00:01"
    dom.devices.memballoon.model = "virtio"
    dom.devices.add(nic)
    disk = Disk()
    disk.target_dev = "vda"
    dom.devices.add(disk)
    second = Disk()
    second.target_dev = "vdb"
    dom.devices.add(second)
    tags = [el.tag for el in dom.devices.element]
    assert tags == ["disk", "disk", "interface", "memballoon"]
    assert [d.target_dev for d in dom.devices.disks] == ["vda", "vdb"]


def test_remove_and_re_add_a_device() -> None:
    dom = Domain()
    for dev in ("vda", "vdb"):
        disk = Disk()
        disk.target_dev = dev
        dom.devices.add(disk)
    first = dom.devices.disks[0]
    dom.devices.remove(first)
    assert [d.target_dev for d in dom.devices.disks] == ["vdb"]
    dom.devices.add(first)
    assert [d.target_dev for d in dom.devices.disks] == ["vdb", "vda"]
    with pytest.raises(ValueError, match="already part"):
        dom.devices.add(dom.devices.disks[0])
    with pytest.raises(ValueError, match="not a child"):
        Domain().devices.remove(dom.devices.disks[0])


def test_lazy_child_can_be_removed() -> None:
    dom = Domain.from_xml(LIVE)
    assert dom.cpu.exists
    dom.remove(dom.cpu)
    assert not dom.cpu.exists
    assert "<cpu" not in dom.to_xml()
    dom.remove(dom.cpu)  # absent: no-op
    with pytest.raises(ValueError, match="already part"):
        dom.add(dom.os)


def test_new_node_wraps_only_its_tag() -> None:
    with pytest.raises(ValueError, match="wraps <disk>"):
        Disk(etree.Element("interface"))


# -- reading never writes ------------------------------------------------------------


def test_reading_absent_things_changes_nothing() -> None:
    xml = "<domain type='kvm'><name>x</name></domain>"
    dom = Domain.from_xml(xml)
    assert dom.vm_id is None
    assert dom.cpu.mode is None
    assert dom.os.loader.path is None
    assert dom.os.boot_devices == []
    assert dom.features.acpi is False
    assert dom.devices.disks == []
    assert dom.devices.memballoon.model is None
    assert dom.memory_kib is None
    assert not dom.cpu.exists
    assert dom.cpu.to_xml() == ""
    assert dom.to_xml() == '<domain type="kvm">\n  <name>x</name>\n</domain>\n'


# -- properties ----------------------------------------------------------------------


def test_read_live_xml() -> None:
    dom = Domain.from_xml(LIVE)
    assert (dom.type, dom.runtime_id, dom.name) == ("kvm", 7, "web-1")
    assert dom.uuid == "6508e6f2-efa6-4820-9e4b-acb4c1c7d849"
    assert dom.title == "Web server"
    assert dom.vm_id == "vm-01hzx3k7q2"
    assert dom.memory_kib == 2 * 1024 * 1024
    assert dom.current_memory_kib == 1536 * 1024
    assert (dom.vcpu, dom.vcpu_current, dom.vcpu_placement) == (2, 1, "static")
    assert (dom.os.type, dom.os.arch, dom.os.machine) == ("hvm", "x86_64", "pc-q35-7.2")
    assert dom.os.boot_devices == ["hd", "cdrom"]
    assert dom.os.bootmenu_enable is False
    assert dom.features.acpi and dom.features.apic and not dom.features.pae
    assert dom.features.vmport_state is False
    assert (dom.cpu.mode, dom.cpu.migratable, dom.cpu.topology_cores) == (
        "host-passthrough",
        True,
        2,
    )
    assert [(t.name, t.tickpolicy, t.present) for t in dom.clock.timers] == [
        ("rtc", "catchup", None),
        ("pit", "delay", None),
        ("hpet", None, False),
    ]
    devices = dom.devices
    assert devices.emulator == "/usr/bin/qemu-system-x86_64"
    root, cdrom = devices.disks
    assert (root.type, root.device, root.driver_type, root.driver_discard) == (
        "file",
        "disk",
        "qcow2",
        "unmap",
    )
    assert root.source_path == "/var/lib/corral/pools/default/web-1-root.qcow2"
    assert (root.target_dev, root.target_bus, root.alias) == ("vda", "virtio", "virtio-disk0")
    assert root.address_type == "pci"
    assert cdrom.readonly and not root.readonly
    assert [(c.type, c.index, c.model) for c in devices.controllers] == [
        ("usb", 0, "qemu-xhci"),
        ("pci", 0, "pcie-root"),
    ]
    (nic,) = devices.interfaces
    assert (nic.mac, nic.source_bridge, nic.target_dev, nic.model) == (
        "52:54:00:ab:cd:01",
        "corralbr0",
        "vnet3",
        "virtio",
    )
    (serial,) = devices.serials
    assert serial.source_path == "/dev/pts/4"
    assert serial.log_file == "/var/log/corral/console/web-1.log"
    assert serial.target_model == "isa-serial"
    (channel,) = devices.channels
    assert channel.target_state == "connected"
    assert channel.source_path is not None and channel.source_path.endswith("guest_agent.0")
    (graphics,) = devices.graphics
    assert (graphics.port, graphics.autoport, graphics.listen) == (5900, True, "127.0.0.1")
    assert [(i.type, i.bus) for i in devices.inputs] == [("mouse", "ps2")]
    assert devices.videos[0].model_vram == 16384
    assert devices.memballoon.stats_period == 10
    assert devices.rngs[0].backend_path == "/dev/urandom"


@pytest.mark.parametrize(
    ("memory", "kib"),
    [
        ("<memory>1024</memory>", 1024),
        ("<memory unit='KiB'>1024</memory>", 1024),
        ("<memory unit='k'>1024</memory>", 1024),
        ("<memory unit='M'>3</memory>", 3072),
        ("<memory unit='MB'>1</memory>", 976),
        ("<memory unit='bytes'>1048576</memory>", 1024),
        ("<memory unit='G'>1</memory>", 1048576),
        ("<memory unit='TiB'>1</memory>", 1024**3),
    ],
)
def test_memory_units(memory: str, kib: int) -> None:
    dom = Domain.from_xml(f"<domain>{memory}</domain>")
    assert dom.memory_kib == kib
    dom.memory_kib = kib
    assert dom.to_xml() == f'<domain>\n  <memory unit="KiB">{kib}</memory>\n</domain>\n'


def test_unknown_memory_unit_is_an_error() -> None:
    with pytest.raises(ValueError, match="unit"):
        _ = Domain.from_xml("<domain><memory unit='lots'>1</memory></domain>").memory_kib


def test_ints_bools_and_hex() -> None:
    dom = Domain.from_xml(LIVE)
    assert dom.devices.controllers[0].index == 0
    timer = Timer()
    timer.present = True
    assert timer.element.get("present") == "yes"
    timer.present = False
    assert timer.present is False
    dom.cpu.migratable = False
    assert dom.cpu.element.get("migratable") == "off"
    disk = Disk(etree.fromstring("<disk><boot order='0x1f'/></disk>"))
    assert disk.boot_order == 31


def test_flag_property() -> None:
    disk = Disk()
    disk.readonly = True
    disk.readonly = True
    assert disk.to_xml() == "<disk>\n  <readonly/>\n</disk>\n"
    disk.readonly = False
    assert disk.to_xml() == "<disk/>\n"


def test_setting_none_removes_and_prunes() -> None:
    disk = Disk()
    disk.driver_name = "qemu"
    disk.driver_cache = "none"
    disk.driver_cache = None
    assert disk.to_xml() == '<disk>\n  <driver name="qemu"/>\n</disk>\n'
    disk.driver_name = None
    assert disk.to_xml() == "<disk/>\n"
    disk.serial = "abc"
    disk.serial = None
    assert disk.to_xml() == "<disk/>\n"
    disk.serial = None  # already absent


def test_vm_id_write_and_remove_keeps_foreign_metadata() -> None:
    dom = Domain.from_xml(LIVE)
    dom.vm_id = "vm-new"
    assert dom.vm_id == "vm-new"
    assert 'generation="4"' in dom.to_xml()
    dom.vm_id = None
    xml = dom.to_xml()
    assert "vm-new" not in xml
    assert "<other:owner>ops</other:owner>" in xml
    assert 'generation="4"' in xml  # our element keeps attributes it did not know

    bare = Domain()
    bare.vm_id = "x"
    bare.vm_id = None
    assert bare.to_xml() == "<domain/>\n"


def test_boot_devices_replace_in_place() -> None:
    dom = Domain.from_xml(LIVE)
    dom.os.boot_devices = ["network"]
    assert dom.os.boot_devices == ["network"]
    dom.os.boot_devices = ["cdrom", "hd"]
    tags = [(el.tag, el.get("dev")) for el in dom.os.element]
    assert tags == [("type", None), ("boot", "cdrom"), ("boot", "hd"), ("bootmenu", None)]
    dom.os.boot_devices = []
    assert dom.os.boot_devices == []


def test_text_property_keeps_whitespace_of_strings() -> None:
    dom = Domain()
    dom.os.cmdline = " a  b "
    assert dom.os.cmdline == " a  b "


# -- read-modify-write ---------------------------------------------------------------


def test_round_trip_is_lossless() -> None:
    out = Domain.from_xml(LIVE).to_xml()
    assert canonical(out) == canonical(LIVE)
    assert_matches_file(out, "libvirt_live_roundtrip.xml")
    assert Domain.from_xml(out).to_xml() == out


def test_read_modify_write_keeps_unknown_xml() -> None:
    dom = Domain.from_xml(LIVE)
    dom.memory_kib = 4 * 1024 * 1024
    dom.current_memory_kib = 4 * 1024 * 1024
    dom.devices.disks[0].driver_cache = "none"
    nic = Interface()
    nic.type = "bridge"
    nic.mac = "52:54:00:ab:cd:02"
    nic.source_bridge = "corralbr1"
    nic.model = "virtio"
    dom.devices.add(nic)
    dom.devices.remove(dom.devices.disks[1])
    out = dom.to_xml()
    assert_matches_file(out, "libvirt_live_modified.xml")
    for kept in (
        "detect_zeroes",
        "<backingStore",
        "<qemu:arg",
        "<seclabel",
        "<watchdog",
        "<other:app",
        "<!-- What a host",
        "<partition>/machine</partition>",
        "suspend-to-mem",
    ):
        assert kept in out, kept


# -- parsing -------------------------------------------------------------------------


def test_malformed_and_wrong_root() -> None:
    with pytest.raises(InvalidInput) as info:
        Domain.from_xml("<domain><name>x</domain>")
    assert info.value.field == "xml"
    with pytest.raises(InvalidInput, match="expected a <domain>"):
        Domain.from_xml("<network/>")


def test_entities_are_not_resolved() -> None:
    xml = (
        '<!DOCTYPE domain [<!ENTITY secret SYSTEM "file:///etc/hostname">]>'
        "<domain><name>&secret;</name></domain>"
    )
    dom = Domain.from_xml(xml)
    assert not dom.name


def test_bytes_with_declaration() -> None:
    xml = b"<?xml version='1.0' encoding='UTF-8'?>\n<domain><name>caf\xc3\xa9</name></domain>"
    assert Domain.from_xml(xml).name == "caf\u00e9"
    assert Domain.from_xml(xml.decode()).name == "caf\u00e9"


def test_repr() -> None:
    dom = Domain()
    assert repr(dom) == "<Domain <domain>>"
    assert repr(dom.cpu) == "<CPU <cpu> (absent)>"
