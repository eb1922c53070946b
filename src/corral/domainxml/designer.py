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

import uuid as uuidlib

from corral.cpulist import format_cpu_list
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
from corral.domainxml.spec import (
    DIMM_STEP_MIB,
    GUEST_AGENT_CHANNEL,
    MAX_MEMORY_MIB,
    MAX_NUMA_NODE,
    MEMORY_SLOTS,
    TARGET_PREFIX,
    DiskSpec,
    DomainSpec,
    NicSpec,
    disk_bus,
    machine_type,
    max_vcpus,
)
from corral.domainxml.spec_checks import check_int_range, validate_disk, validate_nic, validate_spec
from corral.errors import InvalidInput


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
    dom.vcpu = max_vcpus(spec)
    if dom.vcpu > spec.vcpus:  # the rest can be plugged in while it runs
        dom.vcpu_current = spec.vcpus

    buses = [disk_bus(d) for d in spec.disks]
    os = dom.os
    os.type = "hvm"
    os.arch = "x86_64"
    os.machine = machine_type(spec, buses)
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
                split_evenly(max_vcpus(spec), spec.numa_cells),
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
        cell.id, cell.cpus = 0, format_cpu_list(range(max_vcpus(spec)))
        cell.memory, cell.unit = spec.memory_mib * 1024, "KiB"
        dom.cpu.numa.add(cell)


def design_dimm(size_mib: int, node: int = 0) -> MemoryDevice:
    """A ``<memory model='dimm'>`` of ``size_mib`` (a whole number of DIMM_STEP_MIB: the
    guest onlines memory in such blocks) for guest NUMA cell ``node``, to plug into a
    running domain that has ``<maxMemory>``."""
    check_int_range(size_mib, DIMM_STEP_MIB, MAX_MEMORY_MIB, "dimm")
    if size_mib % DIMM_STEP_MIB:
        raise InvalidInput(f"memory is plugged in steps of {DIMM_STEP_MIB} MiB (the guest's "
                           f"memory blocks), not {size_mib} MiB", field="dimm")
    check_int_range(node, 0, MAX_NUMA_NODE, "node")
    dimm = MemoryDevice()
    dimm.model = "dimm"
    dimm.target_size, dimm.target_size_unit = size_mib * 1024, "KiB"
    dimm.target_node = node
    return dimm


def vm_id_of(xml: str) -> str | None:
    """corral's VM id from a domain's XML metadata; ``None`` for a domain corral did not make."""
    return Domain.from_xml(xml).vm_id


# -- devices -------------------------------------------------------------------------


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
            prefix = TARGET_PREFIX[bus]
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
    validate_disk(spec, "disk")
    if spec.target is None:
        raise InvalidInput("a hot-plugged disk needs a target name", field="disk.target")
    return _disk(spec, disk_bus(spec), spec.target)


def design_nic(spec: NicSpec) -> Interface:
    """One ``<interface>`` (a domain's NIC, or one to hot-plug) on a host bridge."""
    validate_nic(spec, "nic")
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
