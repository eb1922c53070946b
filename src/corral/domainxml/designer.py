"""From a VM spec to a libvirt domain: all the policy in one place.

The model (:mod:`corral.domainxml.model`) only maps properties to XML; what a corral VM
looks like is decided here (Nova's ``designer.py`` lesson):

- ``q35`` machine, unless a disk sits on the IDE bus (q35 has none): then ``pc``; a
  ``machine`` asked is kept (``pc`` is i440fx; q35 with an IDE disk is refused);
- BIOS (SeaBIOS) by default; ``uefi``: ``<os firmware='efi'>``, libvirt picks the OVMF
  build from the firmware descriptors by the features asked (``secure-boot`` and
  ``enrolled-keys`` on with ``secure_boot``, both off without: never a Secure Boot firmware
  by surprise), SMM on for Secure Boot, the NVRAM file where the caller says (kept with the
  VM's disks, made from the firmware's template at first start, removed on undefine);
- a TPM 2.0 emulated by swtpm with ``tpm`` (CRB on q35, TIS on pc);
- disk targets by bus in spec order: ``vda, vdb, ...`` (virtio), ``sda, ...`` (scsi and
  sata share the ``sd`` names), ``hda, ...`` (ide), skipping the targets that disks name
  themselves (``DiskSpec.target``: volumes attached to a VM keep theirs); a CD-ROM asked on
  virtio goes on sata; SCSI disks get one ``virtio-scsi`` controller;
- an RBD disk (``DiskSpec.protocol='rbd'``, path ``POOL/IMAGE``) is a ``type='network'``
  disk whose source names the Ceph monitors (QEMU opens it through librbd);
- boot from the disks, then the CD-ROMs, or in the order ``boot`` names (none of that
  with direct kernel boot);
- a CPU topology (sockets x cores x threads = the most vCPUs) when one is asked;
- ``max_vcpus`` above ``vcpus``: ``<vcpu current=...>`` with room for vCPU hot-plug;
  ``current_memory_mib`` below ``memory_mib``: the balloon's target (``<currentMemory>``);
- ``memory_max_mib``: ``<maxMemory>`` with MEMORY_SLOTS DIMM slots and a guest NUMA cell
  (libvirt plugs DIMMs into one; a VM without NUMA cells gets one of everything); the
  definition never holds DIMMs: memory plugged in while it runs is part of ``memory_mib``
  at its next start (``design_dimm`` makes the DIMM to plug in);
- placement as the engine resolved it from the host's facts: vCPU i pinned to
  ``vcpu_pins[i]``, emulator threads on ``emulator_cpus``; ``numa_cells`` guest cells of
  consecutive vCPUs with an even share of the memory, bound strictly to ``numa_nodes``
  when given; all the memory on huge pages of ``hugepage_kib`` (whole pages per cell);
- NICs on a Linux bridge, ``model type='virtio'`` by default (Debian's cloud kernel has no
  e1000 driver);
- the CPU by ``cpu_mode``: ``host-model`` by default on KVM (the host's CPU as a named
  model plus features: migratable to like hosts, unlike ``host-passthrough``, which stays
  available), ``custom`` with ``cpu_model`` (e.g. a cluster baseline such as ``Haswell``);
  under TCG (``qemu``) no ``<cpu>`` unless a custom model is asked: QEMU's default model;
- a pty serial port (with ``<log file=... append='on'/>`` when a console log is asked) and
  its console, the qemu-guest-agent channel, virtio RNG from ``/dev/urandom``, a virtio
  balloon, VNC on 127.0.0.1 with a video card (``video``: VGA by default, ``none``: no
  card) when ``vnc`` is on, none without a display;
- an i6300esb watchdog with ``watchdog``'s action (what the host does when the guest stops
  feeding it) when one is asked;
- ``q35``: a ``pcie-root`` and enough ``pcie-root-port`` controllers for the PCIe devices
  designed plus ``hotplug_ports`` free ones (libvirt alone leaves one free: a second disk or
  NIC hot-plugged into a running VM would find no slot); ``pc`` hot-plugs on its PCI bus;
- poweroff → destroy, reboot → restart, crash → destroy;
- no ``<emulator>``: the agent's libvirt picks its host's default.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import dataclass

from corral.cpulist import MAX_CPU, format_cpu_list
from corral.domainxml.devices import (
    RNG,
    TPM,
    Channel,
    Console,
    Controller,
    Disk,
    Graphics,
    Interface,
    MemoryDevice,
    Serial,
    Video,
    Watchdog,
)
from corral.domainxml.model import Domain, FirmwareFeature, Timer
from corral.domainxml.placement import HugePage, MemNode, NumaCell, VcpuPin
from corral.errors import InvalidInput
from corral.validation import validate_name

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"

VIRT_TYPES = ("kvm", "qemu")
DISK_FORMATS = ("qcow2", "raw")
DISK_DEVICES = ("disk", "cdrom")
DISK_BUSES = ("virtio", "scsi", "sata", "ide")
DISK_PROTOCOLS = ("rbd",)
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
MACHINES = ("q35", "pc")  # pc: i440fx
FIRMWARES = ("bios", "uefi")
BOOT_DEVICES = ("hd", "cdrom", "network")
VIDEO_MODELS = ("vga", "virtio", "bochs", "qxl", "none")
WATCHDOG_ACTIONS = ("reset", "poweroff", "shutdown", "pause", "dump", "inject-nmi")

MIN_MEMORY_MIB = 16
MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB
MAX_VCPUS = 255  # x86 without interrupt remapping
MAX_IDE_DISKS = 4  # two channels, master and slave
MAX_HOTPLUG_PORTS = 64
MEMORY_SLOTS = 16  # DIMM slots of a VM with memory hot-plug (one per live memory increase)
DIMM_STEP_MIB = 128  # Linux onlines hot-added memory in blocks of 128 MiB (x86-64)

_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_VM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_RBD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")  # a DNS name, IPv4 or IPv6
_TARGET_RE = re.compile(r"^(vd|sd|hd)[a-z]{1,3}$")


@dataclass(frozen=True)
class DiskSpec:
    path: str
    format: str = "qcow2"  # qcow2|raw
    device: str = "disk"  # disk|cdrom
    bus: str = "virtio"  # virtio|scsi|sata|ide
    readonly: bool = False
    target: str | None = None  # e.g. "vdb"; None: the next free name of the bus
    protocol: str | None = None  # "rbd": a network disk, path is "POOL/IMAGE"
    hosts: tuple[tuple[str, int], ...] = ()  # (address, port) of the Ceph monitors


def tap_of(mac: str) -> str:
    """The host tap name of the NIC with ``mac``: ``cv`` + its 12 hex digits (14 characters;
    libvirt reserves only vnet/vif). MACs are unique in the cluster, so are these, and the
    agent's firewall can name a NIC's tap before the VM runs."""
    return "cv" + mac.lower().replace(":", "")


@dataclass(frozen=True)
class NicSpec:
    mac: str
    bridge: str  # Linux or Open vSwitch bridge name on the host
    model: str = "virtio"
    virtualport: str | None = None  # "openvswitch" for an OVS bridge
    vlan: int | None = None  # 802.1Q tag of the port (OVS only: libvirt tags OVS ports)
    mtu: int | None = None  # below 1500 on overlay networks
    target: str | None = None  # host tap name (<target dev>): e.g. "cv" + the MAC's 12 hex digits
    inbound_kbps: int | None = None  # QoS <bandwidth><inbound average>: KiB/s (libvirt's unit)
    outbound_kbps: int | None = None  # <outbound average>, KiB/s


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    vm_id: str  # corral's id, stored in metadata
    vcpus: int
    memory_mib: int
    virt_type: str  # "kvm" or "qemu" (TCG)
    disks: list[DiskSpec]
    nics: list[NicSpec]
    console_log: str | None = None  # file for <serial><log file=...>
    kernel: str | None = None  # direct kernel boot (tiny guest)
    initrd: str | None = None
    cmdline: str | None = None
    vnc: bool = True
    video: str = "vga"  # the card behind VNC: vga | virtio | bochs | qxl | none (no card)
    watchdog: str | None = None  # an i6300esb watchdog with this action; None: no watchdog
    cpu_mode: str = "host-model"  # host-model | host-passthrough | custom (+ cpu_model)
    cpu_model: str | None = None
    hotplug_ports: int = 8  # q35: free PCIe ports for disks and NICs plugged in while running
    machine: str | None = None  # q35 | pc; None: q35, or pc when a disk is on IDE
    firmware: str = "bios"  # bios | uefi (OVMF)
    secure_boot: bool = False  # uefi: the Secure Boot OVMF with enrolled keys
    nvram: str | None = None  # uefi: the VM's NVRAM file (None: libvirt's own place)
    tpm: bool = False  # TPM 2.0, emulated by swtpm
    boot: tuple[str, ...] = ()  # hd | cdrom | network, in order; (): disks, then CD-ROMs
    topology: tuple[int, int, int] | None = None  # sockets, cores, threads; product = max vCPUs
    max_vcpus: int | None = None  # vCPU hot-plug: the most vCPUs it can run (None: vcpus)
    current_memory_mib: int | None = None  # the balloon's target (None: memory_mib)
    # Placement on the host (resolved from the host's facts by the engine's vm_placement):
    vcpu_pins: tuple[int, ...] = ()  # the host CPU of each vCPU, up to the most it can run
    emulator_cpus: tuple[int, ...] = ()  # host CPUs of QEMU's emulator threads
    numa_cells: int = 0  # guest NUMA cells (0: none), vCPUs and memory split evenly
    numa_nodes: tuple[int, ...] = ()  # host node bound (strict) per cell; (): cells unbound
    hugepage_kib: int | None = None  # memory backed by huge pages of this size
    memory_max_mib: int | None = None  # memory hot-plug: DIMMs can take it up to this


def design_domain(spec: DomainSpec) -> Domain:
    """Validate ``spec`` (:class:`~corral.errors.InvalidInput` with ``field``) and design it."""
    validate_spec(spec)
    dom = Domain()
    dom.type = spec.virt_type
    dom.name = spec.name
    dom.uuid = str(uuidlib.UUID(spec.uuid))
    dom.vm_id = spec.vm_id
    dom.memory_kib = spec.memory_mib * 1024
    dom.current_memory_kib = (spec.current_memory_mib or spec.memory_mib) * 1024
    dom.vcpu = _max_vcpus(spec)
    if dom.vcpu > spec.vcpus:  # the rest can be plugged in while it runs
        dom.vcpu_current = spec.vcpus

    buses = [_disk_bus(d) for d in spec.disks]
    os = dom.os
    os.type = "hvm"
    os.arch = "x86_64"
    os.machine = _machine(spec, buses)
    if spec.firmware == "uefi":
        _design_uefi(dom, spec)
    if spec.kernel is not None:
        os.kernel = spec.kernel
        os.initrd = spec.initrd
        os.cmdline = spec.cmdline
    elif spec.boot:
        os.boot_devices = list(spec.boot)
    else:
        boot = ["hd"] if any(d.device == "disk" for d in spec.disks) else []
        if any(d.device == "cdrom" for d in spec.disks):
            boot.append("cdrom")
        os.boot_devices = boot or ["hd"]

    dom.features.acpi = True
    dom.features.apic = True
    if spec.secure_boot:
        dom.features.smm_state = True  # OVMF's Secure Boot build keeps its variables in SMM
    _design_cpu(dom, spec)
    if spec.topology is not None:
        dom.cpu.topology_sockets, dom.cpu.topology_cores, dom.cpu.topology_threads = spec.topology
    _design_placement(dom, spec)
    _design_memory_hotplug(dom, spec)

    dom.clock.offset = "utc"
    for name, tickpolicy, present in (
        ("rtc", "catchup", None),
        ("pit", "delay", None),
        ("hpet", None, False),
    ):
        timer = Timer()
        timer.name, timer.tickpolicy, timer.present = name, tickpolicy, present
        dom.clock.add(timer)

    dom.on_poweroff = "destroy"
    dom.on_reboot = "restart"
    dom.on_crash = "destroy"

    _add_disks(dom, spec.disks, buses)
    _add_nics(dom, spec.nics)
    _add_console(dom, spec.console_log)
    _add_extras(dom, spec.vnc, spec.video)
    if spec.watchdog is not None:
        watchdog = Watchdog()
        watchdog.model, watchdog.action = "i6300esb", spec.watchdog
        dom.devices.add(watchdog)
    if spec.tpm:
        tpm = TPM()
        tpm.model = "tpm-crb" if os.machine == "q35" else "tpm-tis"
        tpm.backend_type, tpm.backend_version = "emulator", "2.0"
        dom.devices.add(tpm)
    if os.machine == "q35" and spec.hotplug_ports > 0:
        _add_pcie_ports(dom, spec, buses)
    return dom


def _machine(spec: DomainSpec, buses: list[str]) -> str:
    if spec.machine is not None:
        return spec.machine  # validate_spec refused q35 with an IDE disk
    return "pc" if "ide" in buses else "q35"


def _design_uefi(dom: Domain, spec: DomainSpec) -> None:
    os = dom.os
    os.firmware = "efi"
    for name in ("secure-boot", "enrolled-keys"):
        feature = FirmwareFeature()
        feature.name, feature.enabled = name, spec.secure_boot
        os.firmware_features.add(feature)
    if spec.nvram is not None:
        os.nvram = spec.nvram


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` as even as whole numbers go, the first ones larger."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _design_placement(dom: Domain, spec: DomainSpec) -> None:
    """vCPU i on host CPU ``vcpu_pins[i]``, the emulator threads on ``emulator_cpus``; guest
    NUMA cells of consecutive vCPUs and an even share of the memory (whole huge pages with
    ``hugepage_kib``, else whole MiB), each bound strictly to its host node when
    ``numa_nodes`` names them; huge pages for all the memory."""
    for vcpu, cpu in enumerate(spec.vcpu_pins):
        pin = VcpuPin()
        pin.vcpu, pin.cpuset = vcpu, str(cpu)
        dom.cputune.add(pin)
    if spec.emulator_cpus:
        dom.cputune.emulatorpin_cpuset = format_cpu_list(spec.emulator_cpus)
    if spec.numa_cells:
        unit = spec.hugepage_kib or 1024
        first = 0
        for cell_id, (vcpus, units) in enumerate(zip(
                split_evenly(_max_vcpus(spec), spec.numa_cells),
                split_evenly(spec.memory_mib * 1024 // unit, spec.numa_cells), strict=True)):
            cell = NumaCell()
            cell.id, cell.cpus = cell_id, format_cpu_list(range(first, first + vcpus))
            cell.memory, cell.unit = units * unit, "KiB"
            dom.cpu.numa.add(cell)
            first += vcpus
    if spec.numa_nodes:
        dom.numatune.memory_mode = "strict"
        dom.numatune.memory_nodeset = format_cpu_list(spec.numa_nodes)
        for cell_id, node in enumerate(spec.numa_nodes):
            memnode = MemNode()
            memnode.cellid, memnode.mode, memnode.nodeset = cell_id, "strict", str(node)
            dom.numatune.add(memnode)
    if spec.hugepage_kib is not None:
        page = HugePage()
        page.size, page.unit = spec.hugepage_kib, "KiB"
        dom.memory_backing.hugepages.add(page)


def _design_memory_hotplug(dom: Domain, spec: DomainSpec) -> None:
    """``<maxMemory slots=...>``, and the guest NUMA cell libvirt needs for DIMMs (one cell
    of every vCPU and all the memory, unless the VM has NUMA cells already)."""
    if spec.memory_max_mib is None:
        return
    dom.max_memory_kib = spec.memory_max_mib * 1024
    dom.max_memory_slots = MEMORY_SLOTS
    if not dom.cpu.numa.cells:
        cell = NumaCell()
        cell.id, cell.cpus = 0, format_cpu_list(range(_max_vcpus(spec)))
        cell.memory, cell.unit = spec.memory_mib * 1024, "KiB"
        dom.cpu.numa.add(cell)


def design_dimm(size_mib: int, node: int = 0) -> MemoryDevice:
    """A ``<memory model='dimm'>`` of ``size_mib`` (a whole number of DIMM_STEP_MIB: the
    guest onlines memory in such blocks) for guest NUMA cell ``node``, to plug into a
    running domain that has ``<maxMemory>``."""
    _check_int_range(size_mib, DIMM_STEP_MIB, MAX_MEMORY_MIB, "dimm")
    if size_mib % DIMM_STEP_MIB:
        raise InvalidInput(f"memory is plugged in steps of {DIMM_STEP_MIB} MiB (the guest's "
                           f"memory blocks), not {size_mib} MiB", field="dimm")
    _check_int_range(node, 0, MAX_NUMA_NODE, "node")
    dimm = MemoryDevice()
    dimm.model = "dimm"
    dimm.target_size, dimm.target_size_unit = size_mib * 1024, "KiB"
    dimm.target_node = node
    return dimm


def vm_id_of(xml: str) -> str | None:
    """corral's VM id from a domain's XML metadata; ``None`` for a domain corral did not make."""
    return Domain.from_xml(xml).vm_id


# -- devices -------------------------------------------------------------------------


def _disk_bus(disk: DiskSpec) -> str:
    # virtio-blk cannot hold removable media.
    return "sata" if disk.device == "cdrom" and disk.bus == "virtio" else disk.bus


def target_name(prefix: str, index: int) -> str:
    """libvirt's disk names: ``vda``..``vdz``, ``vdaa``..``vdzz``, ``vdaaa``..."""
    letters = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


def _add_disks(dom: Domain, disks: list[DiskSpec], buses: list[str]) -> None:
    counters: dict[str, int] = {}
    taken = {d.target for d in disks if d.target is not None}
    for spec, bus in zip(disks, buses, strict=True):
        target = spec.target
        if target is None:
            prefix = _TARGET_PREFIX[bus]
            index = counters.get(prefix, 0)
            while target_name(prefix, index) in taken:
                index += 1
            counters[prefix] = index + 1
            target = target_name(prefix, index)
        dom.devices.add(_disk(spec, bus, target))
    if "scsi" in buses:
        controller = Controller()
        controller.type = "scsi"
        controller.index = 0
        controller.model = "virtio-scsi"
        dom.devices.add(controller)


def _disk(spec: DiskSpec, bus: str, target: str) -> Disk:
    disk = Disk()
    if spec.protocol is not None:
        disk.type = "network"
    else:
        disk.type = "block" if spec.path.startswith("/dev/") else "file"
    disk.device = spec.device
    disk.driver_name = "qemu"
    disk.driver_type = spec.format
    if spec.device == "disk" and bus in ("virtio", "scsi"):
        disk.driver_discard = "unmap"
    if disk.type == "network":
        disk.source_protocol = spec.protocol
        disk.source_name = spec.path
        disk.source_hosts = [(host, port) for host, port in spec.hosts]
    elif disk.type == "block":
        disk.source_dev = spec.path
    else:
        disk.source_file = spec.path
    disk.target_dev = target
    disk.target_bus = bus
    disk.readonly = spec.readonly or spec.device == "cdrom"
    return disk


def design_disk(spec: DiskSpec) -> Disk:
    """One ``<disk>`` device to hot-plug into a defined domain: ``spec.target`` is required
    (the caller knows which names the domain uses); validated like a domain's disks."""
    _validate_disk(spec, "disk")
    if spec.target is None:
        raise InvalidInput("a hot-plugged disk needs a target name", field="disk.target")
    return _disk(spec, _disk_bus(spec), spec.target)


def design_nic(spec: NicSpec) -> Interface:
    """One ``<interface>`` (a domain's NIC, or one to hot-plug) on a host bridge."""
    _validate_nic(spec, "nic")
    nic = Interface()
    nic.type = "bridge"
    nic.mac = spec.mac.lower()
    nic.source_bridge = spec.bridge
    if spec.vlan is not None:
        nic.vlan_tag = spec.vlan
    if spec.virtualport is not None:
        nic.virtualport_type = spec.virtualport
    nic.model = spec.model
    if spec.mtu is not None:
        nic.mtu = spec.mtu
    if spec.target is not None:
        nic.target_dev = spec.target
    if spec.inbound_kbps is not None:
        nic.bandwidth_inbound = spec.inbound_kbps
    if spec.outbound_kbps is not None:
        nic.bandwidth_outbound = spec.outbound_kbps
    return nic


def _add_nics(dom: Domain, nics: list[NicSpec]) -> None:
    for spec in nics:
        dom.devices.add(design_nic(spec))


def _add_console(dom: Domain, console_log: str | None) -> None:
    serial = Serial()
    serial.type = "pty"
    if console_log is not None:
        serial.log_file = console_log
        serial.log_append = True
    serial.target_type = "isa-serial"
    serial.target_port = 0
    dom.devices.add(serial)

    console = Console()
    console.type = "pty"
    console.target_type = "serial"
    console.target_port = 0
    dom.devices.add(console)


# PCIe devices the designer adds besides virtio disks and NICs, each behind a root port:
# virtio-serial (guest agent channel), balloon, RNG, and the USB controller libvirt adds.
_PCIE_EXTRAS = 4


def _add_pcie_ports(dom: Domain, spec: DomainSpec, buses: list[str]) -> None:
    """Root ports for the devices, plus ``spec.hotplug_ports`` free ones (if the count of
    devices is off, libvirt adds the ports a device lacks: nothing ever fails for it)."""
    used = sum(1 for b in buses if b == "virtio") + len(spec.nics) + _PCIE_EXTRAS
    used += 1 if "scsi" in buses else 0
    root = Controller()
    root.type, root.index, root.model = "pci", 0, "pcie-root"
    dom.devices.add(root)
    for index in range(1, used + spec.hotplug_ports + 1):
        port = Controller()
        port.type, port.index, port.model = "pci", index, "pcie-root-port"
        dom.devices.add(port)


def _add_extras(dom: Domain, vnc: bool, video_model: str) -> None:
    agent = Channel()
    agent.type = "unix"
    agent.source_mode = "bind"
    agent.target_type = "virtio"
    agent.target_name = GUEST_AGENT_CHANNEL
    dom.devices.add(agent)

    if vnc:
        graphics = Graphics()
        graphics.type = "vnc"
        graphics.port = -1
        graphics.autoport = True
        graphics.listen_type = "address"
        graphics.listen_address = "127.0.0.1"
        dom.devices.add(graphics)
        video = Video()
        video.model_type = video_model
        dom.devices.add(video)

    dom.devices.memballoon.model = "virtio"
    dom.devices.memballoon.stats_period = 10

    rng = RNG()
    rng.model = "virtio"
    rng.backend_model = "random"
    rng.backend_path = "/dev/urandom"
    dom.devices.add(rng)


# -- validation ----------------------------------------------------------------------


def _design_cpu(dom: Domain, spec: DomainSpec) -> None:
    """The CPU policy (see the module docstring); validate_spec checked the values."""
    if spec.cpu_mode == "custom":
        assert spec.cpu_model is not None
        dom.cpu.mode = "custom"
        dom.cpu.match = "exact"
        dom.cpu.check = "partial"
        dom.cpu.model = spec.cpu_model
        dom.cpu.model_fallback = "forbid"  # a host without it refuses, never silently degrades
    elif spec.virt_type != "kvm":
        return  # TCG emulates QEMU's default model; host-* modes mean nothing there
    elif spec.cpu_mode == "host-passthrough":
        dom.cpu.mode = "host-passthrough"
        dom.cpu.check = "none"
        dom.cpu.migratable = True
    else:
        dom.cpu.mode = "host-model"
        dom.cpu.check = "partial"


CPU_MODES = ("host-model", "host-passthrough", "custom")
_CPU_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_spec(spec: DomainSpec) -> None:
    """Raise :class:`InvalidInput` (with ``field``) for the first bad value in ``spec``."""
    validate_name(spec.name, "name")
    if spec.cpu_mode not in CPU_MODES:
        raise InvalidInput(f"cpu_mode must be one of {', '.join(CPU_MODES)}", field="cpu_mode")
    if (spec.cpu_mode == "custom") != (spec.cpu_model is not None) or (
            spec.cpu_model is not None and not _CPU_MODEL_RE.match(spec.cpu_model)):
        raise InvalidInput("cpu_model names a libvirt CPU model (e.g. Haswell, qemu64: letters, "
                           "digits, '_', '.', '-') and goes with cpu_mode custom only",
                           field="cpu_model")
    try:
        uuidlib.UUID(str(spec.uuid))
    except ValueError:
        raise InvalidInput(f"uuid {spec.uuid!r} is not a UUID", field="uuid") from None
    if not isinstance(spec.vm_id, str) or not _VM_ID_RE.match(spec.vm_id):
        raise InvalidInput("vm_id must be 1-128 ASCII letters, digits, '_', '.', ':' or '-'", field="vm_id")
    if spec.virt_type not in VIRT_TYPES:
        raise InvalidInput(
            f"virt_type {spec.virt_type!r} is not one of {', '.join(VIRT_TYPES)}",
            field="virt_type",
        )
    _check_int_range(spec.vcpus, 1, MAX_VCPUS, "vcpus")
    if spec.max_vcpus is not None:
        _check_int_range(spec.max_vcpus, spec.vcpus, MAX_VCPUS, "max_vcpus")
    _check_int_range(spec.memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB, "memory_mib")
    if spec.current_memory_mib is not None:
        _check_int_range(spec.current_memory_mib, MIN_MEMORY_MIB, spec.memory_mib,
                         "current_memory_mib")
    _check_int_range(spec.hotplug_ports, 0, MAX_HOTPLUG_PORTS, "hotplug_ports")
    _validate_platform(spec)
    _validate_placement(spec)
    if spec.memory_max_mib is not None:
        _check_int_range(spec.memory_max_mib, spec.memory_mib, MAX_MEMORY_MIB, "memory_max_mib")

    for i, disk in enumerate(spec.disks):
        _validate_disk(disk, f"disks[{i}]")
    targets = [d.target for d in spec.disks if d.target is not None]
    if len(targets) != len(set(targets)):
        raise InvalidInput("two disks name the same target", field="disks")
    ide = sum(1 for d in spec.disks if _disk_bus(d) == "ide")
    if ide > MAX_IDE_DISKS:
        raise InvalidInput(f"at most {MAX_IDE_DISKS} disks fit on the IDE bus", field="disks")
    seen: set[str] = set()
    for i, nic in enumerate(spec.nics):
        _validate_nic(nic, f"nics[{i}]")
        if nic.mac.lower() in seen:
            raise InvalidInput(f"MAC address {nic.mac} is used twice", field=f"nics[{i}].mac")
        seen.add(nic.mac.lower())

    for field in ("console_log", "kernel", "initrd"):
        value = getattr(spec, field)
        if value is not None:
            _check_path(value, field)
    if spec.kernel is None:
        for field in ("initrd", "cmdline"):
            if getattr(spec, field) is not None:
                raise InvalidInput(f"{field} needs kernel (direct kernel boot)", field=field)
    if spec.cmdline is not None:
        if not isinstance(spec.cmdline, str) or _CONTROL_RE.search(spec.cmdline):
            raise InvalidInput("cmdline must be text without control characters", field="cmdline")
        if len(spec.cmdline) > 4096:
            raise InvalidInput("cmdline is longer than 4096 characters", field="cmdline")
    if spec.kernel is None and not spec.disks:
        raise InvalidInput("a VM needs a disk or a kernel to boot from", field="disks")


def _validate_platform(spec: DomainSpec) -> None:
    """Machine, firmware, TPM, boot order and CPU topology."""
    if spec.machine is not None:
        _check_choice(spec.machine, MACHINES, "machine")
        if spec.machine == "q35" and any(_disk_bus(d) == "ide" for d in spec.disks):
            raise InvalidInput("machine q35 has no IDE bus: put the disk on sata, or choose "
                               "machine pc (i440fx)", field="machine")
    _check_choice(spec.firmware, FIRMWARES, "firmware")
    if spec.secure_boot is not False:
        if spec.secure_boot is not True:
            raise InvalidInput("secure_boot must be true or false", field="secure_boot")
        if spec.firmware != "uefi":
            raise InvalidInput("secure_boot needs firmware uefi", field="secure_boot")
        if _machine(spec, [_disk_bus(d) for d in spec.disks]) != "q35":
            raise InvalidInput("secure_boot needs machine q35 (SMM)", field="secure_boot")
    if spec.nvram is not None:
        if spec.firmware != "uefi":
            raise InvalidInput("nvram is the UEFI variable store: it needs firmware uefi",
                               field="nvram")
        _check_path(spec.nvram, "nvram")
    if not isinstance(spec.tpm, bool):
        raise InvalidInput("tpm must be true or false", field="tpm")
    _check_choice(spec.video, VIDEO_MODELS, "video")
    if spec.watchdog is not None:
        _check_choice(spec.watchdog, WATCHDOG_ACTIONS, "watchdog")
    for dev in spec.boot:
        _check_choice(dev, BOOT_DEVICES, "boot")
    if len(set(spec.boot)) != len(spec.boot):
        raise InvalidInput("boot names a device twice", field="boot")
    if spec.topology is not None:
        if len(spec.topology) != 3:
            raise InvalidInput("topology is (sockets, cores, threads)", field="topology")
        for part in spec.topology:
            _check_int_range(part, 1, MAX_VCPUS, "topology")
        sockets, cores, threads = spec.topology
        if sockets * cores * threads != _max_vcpus(spec):
            raise InvalidInput(f"sockets x cores x threads ({sockets} x {cores} x {threads}) "
                               f"must equal the {_max_vcpus(spec)} vCPUs (the most it can "
                               "run)", field="topology")


HUGEPAGE_KIB = (2048, 1024 * 1024)  # x86-64: 2M and 1G
MAX_NUMA_NODE = 1023  # the kernel's MAX_NUMNODES ceiling


def _validate_placement(spec: DomainSpec) -> None:
    """vCPU pins, emulator CPUs, guest NUMA cells and their host nodes, huge pages."""
    most = _max_vcpus(spec)
    if spec.vcpu_pins and len(spec.vcpu_pins) != most:
        raise InvalidInput(f"vcpu_pins names {len(spec.vcpu_pins)} host CPUs for {most} vCPUs: "
                           "one host CPU per vCPU", field="vcpu_pins")
    for field in ("vcpu_pins", "emulator_cpus"):
        for cpu in getattr(spec, field):
            _check_int_range(cpu, 0, MAX_CPU, field)
    _check_int_range(spec.numa_cells, 0, most, "numa_cells")
    if spec.numa_nodes:
        if len(spec.numa_nodes) != spec.numa_cells:
            raise InvalidInput(f"numa_nodes binds {len(spec.numa_nodes)} cells of "
                               f"{spec.numa_cells}: one host node per guest cell",
                               field="numa_nodes")
        for node in spec.numa_nodes:
            _check_int_range(node, 0, MAX_NUMA_NODE, "numa_nodes")
    unit_kib = 1024
    if spec.hugepage_kib is not None:
        if spec.hugepage_kib not in HUGEPAGE_KIB:
            raise InvalidInput(f"hugepage_kib {spec.hugepage_kib!r} is not one of "
                               f"{', '.join(map(str, HUGEPAGE_KIB))}", field="hugepage_kib")
        unit_kib = spec.hugepage_kib
        if (spec.memory_mib * 1024) % unit_kib:
            raise InvalidInput(f"memory {spec.memory_mib} MiB is not a whole number of "
                               f"{unit_kib // 1024} MiB huge pages", field="memory_mib")
    if spec.numa_cells and spec.memory_mib * 1024 // unit_kib < spec.numa_cells:
        raise InvalidInput(f"memory {spec.memory_mib} MiB does not split into "
                           f"{spec.numa_cells} NUMA cells of whole "
                           f"{'huge pages' if spec.hugepage_kib else 'MiB'}",
                           field="numa_cells")


def _max_vcpus(spec: DomainSpec) -> int:
    return spec.max_vcpus if spec.max_vcpus is not None else spec.vcpus


def _validate_disk(disk: DiskSpec, where: str) -> None:
    if disk.protocol is None:
        _check_path(disk.path, f"{where}.path")
        if disk.hosts:
            raise InvalidInput("hosts are for network disks (protocol)", field=f"{where}.hosts")
    else:
        _validate_network_disk(disk, where)
    _check_choice(disk.format, DISK_FORMATS, f"{where}.format")
    _check_choice(disk.device, DISK_DEVICES, f"{where}.device")
    _check_choice(disk.bus, DISK_BUSES, f"{where}.bus")
    if disk.target is not None:
        if not isinstance(disk.target, str) or not _TARGET_RE.match(disk.target):
            raise InvalidInput(f"target {disk.target!r} is not a disk name like vdb or sdc",
                               field=f"{where}.target")
        if not disk.target.startswith(_TARGET_PREFIX[_disk_bus(disk)]):
            raise InvalidInput(f"target {disk.target} does not fit the {_disk_bus(disk)} bus",
                               field=f"{where}.target")


def _validate_network_disk(disk: DiskSpec, where: str) -> None:
    _check_choice(disk.protocol, DISK_PROTOCOLS, f"{where}.protocol")
    if not isinstance(disk.path, str) or not _RBD_NAME_RE.match(disk.path):
        raise InvalidInput(f"RBD source {disk.path!r} must be POOL/IMAGE (letters, digits, "
                           "'_', '.', '-')", field=f"{where}.path")
    if not disk.hosts:
        raise InvalidInput("an RBD disk needs the addresses of its Ceph monitors",
                           field=f"{where}.hosts")
    for host, port in disk.hosts:
        if not isinstance(host, str) or not _HOST_RE.match(host):
            raise InvalidInput(f"monitor address {host!r} is not a host name or IP address",
                               field=f"{where}.hosts")
        _check_int_range(port, 1, 65535, f"{where}.hosts")


def _validate_nic(nic: NicSpec, where: str) -> None:
    if not isinstance(nic.mac, str) or not _MAC_RE.match(nic.mac.lower()):
        raise InvalidInput(
            f"MAC address {nic.mac!r} is not six hex pairs like 52:54:00:12:34:56",
            field=f"{where}.mac",
        )
    if int(nic.mac[:2], 16) & 1:
        raise InvalidInput(
            f"MAC address {nic.mac} is multicast; a NIC needs a unicast address",
            field=f"{where}.mac",
        )
    if not isinstance(nic.bridge, str) or not _BRIDGE_RE.match(nic.bridge) or nic.bridge in (".", ".."):
        raise InvalidInput(
            f"bridge {nic.bridge!r} must be 1-15 characters of letters, digits, '_', '.' or '-'",
            field=f"{where}.bridge",
        )
    _check_choice(nic.model, NIC_MODELS, f"{where}.model")
    if nic.virtualport is not None:
        _check_choice(nic.virtualport, ("openvswitch",), f"{where}.virtualport")
    if nic.vlan is not None:
        _check_int_range(nic.vlan, 1, 4094, f"{where}.vlan")
        if nic.virtualport != "openvswitch":
            raise InvalidInput("libvirt tags a port with a VLAN only on an Open vSwitch bridge",
                               field=f"{where}.vlan")
    if nic.mtu is not None:
        _check_int_range(nic.mtu, 576, 65535, f"{where}.mtu")
    if nic.target is not None and (
            not isinstance(nic.target, str) or not _TAP_RE.fullmatch(nic.target)
            or nic.target.startswith(("vnet", "vif", "macvtap", "macvlan"))):
        raise InvalidInput(f"target {nic.target!r} must be 1-15 letters, digits, '_' or '-' "
                           "and not start with a prefix libvirt reserves (vnet, vif, macv*)",
                           field=f"{where}.target")
    for name in ("inbound_kbps", "outbound_kbps"):
        value = getattr(nic, name)
        if value is not None:
            _check_int_range(value, 1, MAX_BANDWIDTH_KBPS, f"{where}.{name}")


_TAP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,14}")
MAX_BANDWIDTH_KBPS = 2**32 - 1  # libvirt keeps rates in an unsigned int (KiB/s)


def _check_int_range(value: object, low: int, high: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer", field=field)
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be between {low} and {high}, not {value}", field=field)


def _check_choice(value: object, choices: tuple[str, ...], field: str) -> None:
    if value not in choices:
        raise InvalidInput(f"{field} {value!r} is not one of {', '.join(choices)}", field=field)


def _check_path(value: object, field: str) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidInput(f"{field} must be an absolute path", field=field)
    if _CONTROL_RE.search(value):
        raise InvalidInput(f"{field} must not contain control characters", field=field)
    if len(value) > 4096:
        raise InvalidInput(f"{field} is longer than 4096 characters", field=field)
