"""The designer: expected-output files, policy, and spec validation."""

from __future__ import annotations

import dataclasses

import pytest
from domainxml_specs import DESIGNED, IDE_PC, KVM_FULL, QEMU_TINY, assert_matches_file

from corral.domainxml import (
    GUEST_AGENT_CHANNEL,
    DiskSpec,
    Domain,
    DomainSpec,
    MemoryDevice,
    NicSpec,
    design_dimm,
    design_domain,
    vm_id_of,
)
from corral.domainxml.designer import target_name
from corral.errors import InvalidInput


@pytest.mark.parametrize("filename", sorted(DESIGNED))
def test_designed_xml_matches_expected_file(filename: str) -> None:
    assert_matches_file(design_domain(DESIGNED[filename]).to_xml(), filename)


@pytest.mark.parametrize("filename", sorted(DESIGNED))
def test_designed_xml_parses_back_to_the_same_text(filename: str) -> None:
    xml = design_domain(DESIGNED[filename]).to_xml()
    assert Domain.from_xml(xml).to_xml() == xml


def test_kvm_gets_host_model_and_q35() -> None:
    dom = design_domain(KVM_FULL)
    assert dom.type == "kvm"
    assert dom.cpu.mode == "host-model"  # migratable between like hosts; passthrough is not
    assert dom.os.machine == "q35"
    assert dom.os.arch == "x86_64"


def test_qemu_tcg_has_no_cpu_element() -> None:
    dom = design_domain(QEMU_TINY)
    assert dom.type == "qemu"
    assert not dom.cpu.exists
    assert "<cpu" not in dom.to_xml()


def test_identity_and_sizes() -> None:
    dom = design_domain(KVM_FULL)
    assert dom.name == "web-1"
    assert dom.uuid == "6508e6f2-efa6-4820-9e4b-acb4c1c7d849"  # normalized
    assert dom.vm_id == "vm-01hzx3k7q2"
    assert dom.memory_kib == dom.current_memory_kib == 2048 * 1024
    assert dom.vcpu == 2
    assert (dom.on_poweroff, dom.on_reboot, dom.on_crash) == ("destroy", "restart", "destroy")


def test_disk_targets_by_bus_and_cdrom_on_sata() -> None:
    disks = design_domain(KVM_FULL).devices.disks
    assert [(d.target_dev, d.target_bus, d.device) for d in disks] == [
        ("vda", "virtio", "disk"),
        ("sda", "sata", "cdrom"),
        ("vdb", "virtio", "disk"),
        ("sdb", "scsi", "disk"),
    ]
    cdrom = disks[1]
    assert cdrom.readonly
    assert [d.type for d in disks] == ["file", "file", "file", "block"]
    assert disks[3].source_dev == "/dev/vg0/web-1-logs"
    assert disks[3].source_path == "/dev/vg0/web-1-logs"
    assert disks[0].source_path == "/var/lib/corral/pools/default/web-1-root.qcow2"
    assert [d.driver_type for d in disks] == ["qcow2", "raw", "raw", "raw"]


def test_scsi_disk_gets_a_virtio_scsi_controller() -> None:
    controllers = [c for c in design_domain(KVM_FULL).devices.controllers if c.type == "scsi"]
    assert [(c.type, c.index, c.model) for c in controllers] == [("scsi", 0, "virtio-scsi")]
    no_scsi = dataclasses.replace(KVM_FULL, disks=KVM_FULL.disks[:3])
    assert [c for c in design_domain(no_scsi).devices.controllers if c.type == "scsi"] == []


def test_boot_order_disk_then_cdrom() -> None:
    cdrom_first = dataclasses.replace(
        KVM_FULL,
        disks=[DiskSpec("/srv/i.iso", format="raw", device="cdrom"), DiskSpec("/srv/r.qcow2")],
    )
    assert design_domain(cdrom_first).os.boot_devices == ["hd", "cdrom"]
    only_cdrom = dataclasses.replace(KVM_FULL, disks=[DiskSpec("/srv/i.iso", format="raw", device="cdrom")])
    assert design_domain(only_cdrom).os.boot_devices == ["cdrom"]


def test_direct_kernel_boot() -> None:
    os = design_domain(QEMU_TINY).os
    assert os.kernel == "/var/lib/corral/images/tiny/vmlinuz"
    assert os.initrd == "/var/lib/corral/images/tiny/initrd.img"
    assert os.cmdline == "console=ttyS0 root=/dev/vda rw quiet"
    assert os.boot_devices == []


def test_ide_disk_chooses_pc_machine() -> None:
    dom = design_domain(IDE_PC)
    assert dom.os.machine == "pc"
    assert [d.target_dev for d in dom.devices.disks] == ["hda", "hdb", "sda"]


def test_nics_are_virtio_on_bridges_with_lowercase_mac() -> None:
    nics = design_domain(KVM_FULL).devices.interfaces
    assert [(n.type, n.mac, n.source_bridge, n.model) for n in nics] == [
        ("bridge", "52:54:00:ab:cd:01", "corralbr0", "virtio"),
        ("bridge", "52:54:00:ab:cd:02", "br-storage.10", "virtio"),
    ]
    assert nics[0].target_dev is None


def test_serial_console_with_log() -> None:
    devices = design_domain(KVM_FULL).devices
    (serial,) = devices.serials
    assert serial.type == "pty"
    assert serial.log_file == "/var/log/corral/console/web-1.log"
    assert serial.log_append is True
    (console,) = devices.consoles
    assert (console.type, console.target_type, console.target_port) == ("pty", "serial", 0)
    no_log = design_domain(dataclasses.replace(KVM_FULL, console_log=None)).devices.serials[0]
    assert no_log.log_file is None
    assert "<log" not in no_log.to_xml()


def test_agent_channel_rng_balloon() -> None:
    devices = design_domain(QEMU_TINY).devices
    (channel,) = devices.channels
    assert (channel.type, channel.target_type, channel.target_name) == (
        "unix",
        "virtio",
        GUEST_AGENT_CHANNEL,
    )
    (rng,) = devices.rngs
    assert (rng.model, rng.backend_model, rng.backend_path) == ("virtio", "random", "/dev/urandom")
    assert devices.memballoon.model == "virtio"


def test_vnc_only_when_asked() -> None:
    (graphics,) = design_domain(KVM_FULL).devices.graphics
    assert (graphics.type, graphics.autoport, graphics.listen_address) == ("vnc", True, "127.0.0.1")
    assert design_domain(QEMU_TINY).devices.graphics == []
    assert design_domain(QEMU_TINY).devices.videos == []


def test_no_emulator_and_no_backing_store() -> None:
    xml = design_domain(KVM_FULL).to_xml()
    assert "<emulator" not in xml
    assert "backingStore" not in xml


def test_vm_id_of() -> None:
    assert vm_id_of(design_domain(KVM_FULL).to_xml()) == "vm-01hzx3k7q2"
    foreign = "<domain type='kvm'><name>x</name><metadata><a:b xmlns:a='urn:x'/></metadata></domain>"
    assert vm_id_of(foreign) is None
    assert vm_id_of("<domain type='kvm'><name>x</name></domain>") is None
    with pytest.raises(InvalidInput):
        vm_id_of("<domain")


@pytest.mark.parametrize(
    ("index", "name"),
    [
        (0, "vda"),
        (1, "vdb"),
        (25, "vdz"),
        (26, "vdaa"),
        (27, "vdab"),
        (701, "vdzz"),
        (702, "vdaaa"),
    ],
)
def test_target_names(index: int, name: str) -> None:
    assert target_name("vd", index) == name


def test_many_virtio_disks() -> None:
    spec = dataclasses.replace(QEMU_TINY, disks=[DiskSpec(f"/d/{i}.qcow2") for i in range(28)])
    names = [d.target_dev for d in design_domain(spec).devices.disks]
    assert names[25:] == ["vdz", "vdaa", "vdab"]
    assert len(set(names)) == 28


# -- validation ----------------------------------------------------------------------

_NIC = NicSpec("52:54:00:00:00:01", "br0")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"vm_id": ""}, "vm_id"),
        ({"vm_id": 'a"b'}, "vm_id"),
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": 256}, "vcpus"),
        ({"vcpus": True}, "vcpus"),
        ({"memory_mib": 15}, "memory_mib"),
        ({"memory_mib": "512"}, "memory_mib"),
        ({"virt_type": "xen"}, "virt_type"),
        ({"disks": [], "kernel": None, "initrd": None, "cmdline": None}, "disks"),
        ({"disks": [DiskSpec("relative.qcow2")]}, "disks[0].path"),
        ({"disks": [DiskSpec("/a\nb.qcow2")]}, "disks[0].path"),
        ({"disks": [DiskSpec("/a.vmdk", format="vmdk")]}, "disks[0].format"),
        ({"disks": [DiskSpec("/a", device="floppy")]}, "disks[0].device"),
        ({"disks": [DiskSpec("/a", bus="usb")]}, "disks[0].bus"),
        ({"disks": [DiskSpec(f"/{i}", bus="ide") for i in range(5)]}, "disks"),
        ({"nics": [NicSpec("52:54:00:00:00", "br0")]}, "nics[0].mac"),
        ({"nics": [NicSpec("52-54-00-00-00-01", "br0")]}, "nics[0].mac"),
        ({"nics": [NicSpec("52:54:00:00:00:0g", "br0")]}, "nics[0].mac"),
        ({"nics": [NicSpec("01:00:5e:00:00:01", "br0")]}, "nics[0].mac"),
        ({"nics": [NicSpec("52:54:00:00:00:01", "")]}, "nics[0].bridge"),
        ({"nics": [NicSpec("52:54:00:00:00:01", "a" * 16)]}, "nics[0].bridge"),
        ({"nics": [NicSpec("52:54:00:00:00:01", "br 0")]}, "nics[0].bridge"),
        ({"nics": [NicSpec("52:54:00:00:00:01", "br/0")]}, "nics[0].bridge"),
        ({"nics": [NicSpec("52:54:00:00:00:01", "..")]}, "nics[0].bridge"),
        ({"nics": [NicSpec("52:54:00:00:00:01", "br0", model="ne2k")]}, "nics[0].model"),
        ({"nics": [_NIC, NicSpec("52:54:00:00:00:01", "br1")]}, "nics[1].mac"),
        ({"console_log": "console.log"}, "console_log"),
        ({"kernel": None}, "initrd"),
        ({"kernel": "vmlinuz"}, "kernel"),
        ({"initrd": "/boot/\x00initrd"}, "initrd"),
        ({"cmdline": "console=ttyS0\n"}, "cmdline"),
        ({"machine": "virt"}, "machine"),
        ({"machine": "q35", "disks": [DiskSpec("/a", bus="ide")]}, "machine"),
        ({"firmware": "coreboot"}, "firmware"),
        ({"secure_boot": True}, "secure_boot"),
        ({"secure_boot": 1, "firmware": "uefi"}, "secure_boot"),
        ({"secure_boot": True, "firmware": "uefi", "machine": "pc"}, "secure_boot"),
        ({"nvram": "/vm.fd"}, "nvram"),
        ({"nvram": "vm.fd", "firmware": "uefi"}, "nvram"),
        ({"tpm": "yes"}, "tpm"),
        ({"boot": ("floppy",)}, "boot"),
        ({"boot": ("hd", "hd")}, "boot"),
        ({"topology": (1, 1)}, "topology"),
        ({"topology": (0, 1, 1)}, "topology"),
        ({"topology": (1, 2, 1)}, "topology"),
    ],
)
def test_invalid_spec(changes: dict[str, object], field: str) -> None:
    spec = dataclasses.replace(QEMU_TINY, **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as info:
        design_domain(spec)
    assert info.value.field == field
    assert info.value.status == 422
    assert info.value.message


def test_bios_by_default_and_no_secure_boot_firmware_by_surprise() -> None:
    assert design_domain(QEMU_TINY).os.firmware is None  # SeaBIOS, libvirt's default
    plain = design_domain(dataclasses.replace(QEMU_TINY, firmware="uefi")).os
    assert plain.firmware == "efi"
    assert {(f.name, f.enabled) for f in plain.firmware_features.features} == {
        ("secure-boot", False), ("enrolled-keys", False)}


def test_secure_boot_asks_for_enrolled_keys_and_smm() -> None:
    dom = design_domain(dataclasses.replace(KVM_FULL, firmware="uefi", secure_boot=True,
                                            nvram="/srv/vm.fd"))
    assert {(f.name, f.enabled) for f in dom.os.firmware_features.features} == {
        ("secure-boot", True), ("enrolled-keys", True)}
    assert dom.features.smm_state is True
    assert dom.os.nvram == "/srv/vm.fd"


def test_tpm_is_crb_on_q35_and_tis_on_pc() -> None:
    q35 = design_domain(dataclasses.replace(QEMU_TINY, tpm=True)).devices.tpms
    pc = design_domain(dataclasses.replace(QEMU_TINY, tpm=True, machine="pc")).devices.tpms
    assert [(t.model, t.backend_type, t.backend_version) for t in q35] == [
        ("tpm-crb", "emulator", "2.0")]
    assert [t.model for t in pc] == ["tpm-tis"]
    assert design_domain(QEMU_TINY).devices.tpms == []


def test_boot_order_asked_replaces_the_default_and_kernel_boot_ignores_it() -> None:
    asked = dataclasses.replace(KVM_FULL, boot=("network", "cdrom", "hd"))
    assert design_domain(asked).os.boot_devices == ["network", "cdrom", "hd"]
    assert design_domain(dataclasses.replace(QEMU_TINY, boot=("network",))).os.boot_devices == []


def test_topology_under_tcg_is_a_cpu_element_without_a_mode() -> None:
    cpu = design_domain(dataclasses.replace(QEMU_TINY, vcpus=4, topology=(2, 2, 1))).cpu
    assert (cpu.mode, cpu.topology_sockets, cpu.topology_cores, cpu.topology_threads) == (
        None, 2, 2, 1)


def test_valid_edges() -> None:
    spec = dataclasses.replace(
        QEMU_TINY,
        vcpus=255,
        memory_mib=16,
        nics=[NicSpec("02:00:00:00:00:00", "a" * 15), NicSpec("52:54:00:00:00:02", "b_r.0-1")],
    )
    dom = design_domain(spec)
    assert dom.vcpu == 255
    assert dom.memory_kib == 16 * 1024


def test_spec_cmdline_without_kernel_is_rejected() -> None:
    spec = dataclasses.replace(QEMU_TINY, kernel=None, initrd=None)
    with pytest.raises(InvalidInput) as info:
        design_domain(spec)
    assert info.value.field == "cmdline"


def test_spec_dataclasses_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KVM_FULL.vcpus = 3  # type: ignore[misc]
    assert isinstance(KVM_FULL, DomainSpec)


@pytest.mark.parametrize(("virt", "mode", "model", "xml"), [
    ("kvm", "host-model", None, '<cpu mode="host-model" check="partial"/>'),
    ("kvm", "host-passthrough", None,
     '<cpu mode="host-passthrough" check="none" migratable="on"/>'),
    ("kvm", "custom", "Haswell",
     '<cpu mode="custom" match="exact" check="partial"><model fallback="forbid">Haswell</model></cpu>'),
    ("qemu", "custom", "qemu64",
     '<cpu mode="custom" match="exact" check="partial"><model fallback="forbid">qemu64</model></cpu>'),
    ("qemu", "host-model", None, None),  # TCG: QEMU's default model, no <cpu>
])
def test_cpu_policy(virt: str, mode: str, model: str | None, xml: str | None) -> None:
    spec = dataclasses.replace(KVM_FULL, virt_type=virt, cpu_mode=mode, cpu_model=model)
    designed = design_domain(spec).to_xml()
    if xml is None:
        assert "<cpu" not in designed
    else:
        assert xml in designed.replace("\n", "").replace("  ", "")


@pytest.mark.parametrize(("mode", "model", "field"), [
    ("host-copy", None, "cpu_mode"), ("custom", None, "cpu_model"),
    ("host-model", "Haswell", "cpu_model"), ("custom", "Has well'", "cpu_model"),
])
def test_cpu_policy_refuses_bad_values(mode: str, model: str | None, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        design_domain(dataclasses.replace(KVM_FULL, cpu_mode=mode, cpu_model=model))
    assert info.value.field == field


def test_memory_hotplug_gets_max_memory_slots_and_one_numa_cell() -> None:
    from domainxml_specs import MEMORY_HOTPLUG

    dom = design_domain(MEMORY_HOTPLUG)
    assert (dom.max_memory_kib, dom.max_memory_slots) == (1024 * 1024, 16)
    assert dom.memory_kib == 256 * 1024  # the definition holds no DIMMs
    assert not dom.devices.memories
    [cell] = dom.cpu.numa.cells
    assert (cell.id, cell.cpus, cell.memory, cell.unit) == (0, "0,1", 256 * 1024, "KiB")
    plain = design_domain(QEMU_TINY)
    assert plain.max_memory_kib is None and not plain.cpu.numa.cells
    with pytest.raises(InvalidInput) as err:
        design_domain(dataclasses.replace(MEMORY_HOTPLUG, memory_max_mib=255))
    assert err.value.field == "memory_max_mib"


def test_a_dimm_is_whole_memory_blocks_and_reads_back_with_its_slot() -> None:
    dimm = design_dimm(384, node=0)
    assert (dimm.model, dimm.target_size, dimm.target_size_unit, dimm.target_node) == (
        "dimm", 384 * 1024, "KiB", 0)
    for bad in (100, 0, 130):
        with pytest.raises(InvalidInput) as err:
            design_dimm(bad)
        assert err.value.field == "dimm"
    # libvirt's live XML: the DIMM with the slot and address it was given
    dom = design_domain(dataclasses.replace(QEMU_TINY, memory_max_mib=1024))
    live = MemoryDevice.from_xml(dimm.to_xml())
    live.address_slot, live.alias = 0, "dimm0"
    dom.devices.add(live)
    [back] = Domain.from_xml(dom.to_xml()).devices.memories
    assert (back.address_slot, back.target_size) == (0, 384 * 1024)
