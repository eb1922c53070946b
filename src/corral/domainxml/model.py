"""Typed model of libvirt domain XML: ``<domain>`` and its non-device parts.

No policy lives here (that is :mod:`corral.domainxml.designer`): the classes only map
properties to XML. Devices are in :mod:`corral.domainxml.devices`.
"""

from __future__ import annotations

from lxml import etree

from corral.domainxml.devices import Devices
from corral.domainxml.placement import CPUTune, MemoryBacking, Numa, NumaTune
from corral.domainxml.xmlnode import (
    BoolProperty,
    Child,
    Children,
    Element,
    FlagProperty,
    IntProperty,
    PropPath,
    StrProperty,
    XMLNode,
    XMLProperty,
    insert_ordered,
    parse_int,
)

# Factors to KiB for libvirt's scaled integers (docs: formatdomain.html#memory-allocation).
_UNIT_BYTES: dict[str, int] = {
    "b": 1, "bytes": 1,
    "kb": 1000, "k": 1024, "kib": 1024,
    "mb": 1000**2, "m": 1024**2, "mib": 1024**2,
    "gb": 1000**3, "g": 1024**3, "gib": 1024**3,
    "tb": 1000**4, "t": 1024**4, "tib": 1024**4,
    "pb": 1000**5, "p": 1024**5, "pib": 1024**5,
    "eb": 1000**6, "e": 1024**6, "eib": 1024**6,
}  # fmt: skip


class MemoryProperty(XMLProperty[int]):
    """A memory size element in KiB: reads any ``unit=``, writes ``unit='KiB'``."""

    def __init__(self, path: str) -> None:
        super().__init__(path, parse_int, str)
        self.unit_path = PropPath(path + "/@unit")

    def _load(self, obj: XMLNode) -> int | None:
        raw = obj._get_raw(self.path)
        if raw is None or not raw.strip():
            return None
        unit = (obj._get_raw(self.unit_path) or "KiB").strip().lower()
        factor = _UNIT_BYTES.get(unit)
        if factor is None:
            raise ValueError(f"unknown memory unit {unit!r}")
        return parse_int(raw.strip()) * factor // 1024

    def _store(self, obj: XMLNode, value: int | None) -> None:
        obj._set_raw(self.path, None if value is None else str(value))
        if value is not None:
            obj._set_raw(self.unit_path, "KiB")


class Loader(XMLNode):
    """``<os><loader>``: firmware image (UEFI later)."""

    TAG = "loader"
    path = StrProperty(".")
    readonly = BoolProperty("@readonly")
    type = StrProperty("@type")  # rom | pflash
    secure = BoolProperty("@secure")


class FirmwareFeature(XMLNode):
    """``<os><firmware><feature enabled=... name=...>``: what firmware auto-selection must
    (``yes``) or must not (``no``) offer: ``secure-boot``, ``enrolled-keys``."""

    TAG = "feature"
    name = StrProperty("@name")
    enabled = BoolProperty("@enabled")


class FirmwareFeatures(XMLNode):
    """``<os><firmware>``: the features libvirt matches against the firmware descriptors
    (/usr/share/qemu/firmware/*.json) when ``<os firmware='efi'>`` picks the firmware."""

    TAG = "firmware"
    features = Children(FirmwareFeature)


class OS(XMLNode):
    """``<os>``: guest type, machine, firmware, direct kernel boot, boot order."""

    TAG = "os"
    CHILD_ORDER = (
        "type", "firmware", "loader", "nvram", "bootloader", "kernel", "initrd", "cmdline",
        "dtb", "acpi", "boot", "bootmenu", "smbios", "bios",
    )  # fmt: skip

    type = StrProperty("type")  # hvm
    arch = StrProperty("type/@arch")
    machine = StrProperty("type/@machine")
    firmware = StrProperty("@firmware")  # efi | bios (firmware auto-selection)
    firmware_features = Child(FirmwareFeatures)
    loader = Child(Loader)
    nvram = StrProperty("nvram")
    nvram_template = StrProperty("nvram/@template")
    kernel = StrProperty("kernel")
    initrd = StrProperty("initrd")
    cmdline = StrProperty("cmdline")
    bootmenu_enable = BoolProperty("bootmenu/@enable")

    @property
    def boot_devices(self) -> list[str]:
        """``<boot dev=...>`` in order: ``hd``, ``cdrom``, ``network``, ``fd``."""
        el = self._element(create=False)
        if el is None:
            return []
        return [b.get("dev", "") for b in el.findall("boot")]

    @boot_devices.setter
    def boot_devices(self, devs: list[str]) -> None:
        el = self._element(create=bool(devs))
        if el is None:
            return
        for old in el.findall("boot"):
            el.remove(old)
        previous: Element | None = None
        for dev in devs:
            new = etree.Element("boot", dev=dev)
            if previous is None:
                insert_ordered(el, new, self._order)
            else:
                previous.addnext(new)
            previous = new


class Features(XMLNode):
    """``<features>``: hypervisor features, mostly empty flag elements."""

    TAG = "features"
    CHILD_ORDER = ("acpi", "apic", "pae", "hap", "hyperv", "kvm", "pmu", "vmport", "smm")

    acpi = FlagProperty("acpi")
    apic = FlagProperty("apic")
    pae = FlagProperty("pae")
    vmport_state = BoolProperty("vmport/@state", true="on", false="off")
    smm_state = BoolProperty("smm/@state", true="on", false="off")


class CPU(XMLNode):
    """``<cpu>``: mode (``host-passthrough``, ``host-model``, ``custom``), model, topology,
    guest NUMA cells."""

    TAG = "cpu"
    CHILD_ORDER = ("model", "vendor", "topology", "cache", "maxphysaddr", "feature", "numa")

    mode = StrProperty("@mode")
    match = StrProperty("@match")
    check = StrProperty("@check")
    migratable = BoolProperty("@migratable", true="on", false="off")
    model = StrProperty("model")
    model_fallback = StrProperty("model/@fallback")
    topology_sockets = IntProperty("topology/@sockets")
    topology_dies = IntProperty("topology/@dies")
    topology_cores = IntProperty("topology/@cores")
    topology_threads = IntProperty("topology/@threads")
    numa = Child(Numa)


class Timer(XMLNode):
    """``<clock><timer>``."""

    TAG = "timer"
    name = StrProperty("@name")  # rtc | pit | hpet | kvmclock | tsc | hypervclock
    tickpolicy = StrProperty("@tickpolicy")  # delay | catchup | merge | discard
    present = BoolProperty("@present")


class Clock(XMLNode):
    """``<clock offset=...>`` with its timers."""

    TAG = "clock"
    offset = StrProperty("@offset")  # utc | localtime | timezone | variable
    timers = Children(Timer)


class Domain(XMLNode):
    """``<domain type='kvm'|'qemu'>``: the root of a libvirt domain definition."""

    TAG = "domain"
    CHILD_ORDER = (
        "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
        "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus", "iothreads",
        "iothreadids", "cputune", "numatune", "resource", "sysinfo", "bootloader",
        "bootloader_args", "os", "idmap", "features", "cpu", "clock", "on_poweroff",
        "on_reboot", "on_crash", "on_lockfailure", "pm", "perf", "devices", "seclabel",
    )  # fmt: skip

    type = StrProperty("@type")  # kvm | qemu
    runtime_id = IntProperty("@id")  # libvirt's id of a running domain (read only in practice)
    name = StrProperty("name")
    uuid = StrProperty("uuid")
    title = StrProperty("title")
    description = StrProperty("description")
    vm_id = StrProperty("metadata/corral:vm/@id")
    """corral's id of the VM: ``<metadata><corral:vm xmlns:corral=... id=.../></metadata>``."""

    memory_kib = MemoryProperty("memory")
    current_memory_kib = MemoryProperty("currentMemory")
    max_memory_kib = MemoryProperty("maxMemory")  # memory hot-plug: the most it can have
    max_memory_slots = IntProperty("maxMemory/@slots")  # DIMM slots for it
    vcpu = IntProperty("vcpu")
    vcpu_placement = StrProperty("vcpu/@placement")
    vcpu_current = IntProperty("vcpu/@current")
    memory_backing = Child(MemoryBacking)
    cputune = Child(CPUTune)
    numatune = Child(NumaTune)

    os = Child(OS)
    features = Child(Features)
    cpu = Child(CPU)
    clock = Child(Clock)

    on_poweroff = StrProperty("on_poweroff")  # destroy | restart | preserve | rename-restart
    on_reboot = StrProperty("on_reboot")
    on_crash = StrProperty("on_crash")  # + coredump-destroy | coredump-restart

    devices = Child(Devices)
