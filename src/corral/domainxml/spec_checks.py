"""Checks of a DomainSpec before anything is designed from it: every value that reaches XML,
a path or a host interface is range-, choice- and charset-checked, and a bad one is an
InvalidInput naming its field (a 422 at the API's edge)."""

from __future__ import annotations

import re
import uuid as uuidlib

from corral.cpulist import MAX_CPU
from corral.domainxml.spec import (
    BOOT_DEVICES,
    DISK_BUSES,
    DISK_DEVICES,
    DISK_FORMATS,
    DISK_PROTOCOLS,
    FIRMWARES,
    HUGEPAGE_KIB,
    MACHINES,
    MAX_HOTPLUG_PORTS,
    MAX_IDE_DISKS,
    MAX_MEMORY_MIB,
    MAX_NUMA_NODE,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    NIC_MODELS,
    TARGET_PREFIX,
    VIDEO_MODELS,
    VIRT_TYPES,
    WATCHDOG_ACTIONS,
    DiskSpec,
    DomainSpec,
    NicSpec,
    disk_bus,
    machine_type,
    max_vcpus,
)
from corral.errors import InvalidInput
from corral.validation import validate_vm_name

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_VM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_RBD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")  # a DNS name, IPv4 or IPv6
_TARGET_RE = re.compile(r"^(vd|sd|hd)[a-z]{1,3}$")


CPU_MODES = ("host-model", "host-passthrough", "custom")
_CPU_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_spec(spec: DomainSpec) -> None:
    """Raise :class:`InvalidInput` (with ``field``) for the first bad value in ``spec``."""
    validate_vm_name(spec.name, "name")
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
    check_int_range(spec.vcpus, 1, MAX_VCPUS, "vcpus")
    if spec.max_vcpus is not None:
        check_int_range(spec.max_vcpus, spec.vcpus, MAX_VCPUS, "max_vcpus")
    check_int_range(spec.memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB, "memory_mib")
    if spec.current_memory_mib is not None:
        check_int_range(spec.current_memory_mib, MIN_MEMORY_MIB, spec.memory_mib,
                         "current_memory_mib")
    check_int_range(spec.hotplug_ports, 0, MAX_HOTPLUG_PORTS, "hotplug_ports")
    _validate_platform(spec)
    _validate_placement(spec)
    if spec.memory_max_mib is not None:
        check_int_range(spec.memory_max_mib, spec.memory_mib, MAX_MEMORY_MIB, "memory_max_mib")

    for i, disk in enumerate(spec.disks):
        validate_disk(disk, f"disks[{i}]")
    targets = [d.target for d in spec.disks if d.target is not None]
    if len(targets) != len(set(targets)):
        raise InvalidInput("two disks name the same target", field="disks")
    ide = sum(1 for d in spec.disks if disk_bus(d) == "ide")
    if ide > MAX_IDE_DISKS:
        raise InvalidInput(f"at most {MAX_IDE_DISKS} disks fit on the IDE bus", field="disks")
    seen: set[str] = set()
    for i, nic in enumerate(spec.nics):
        validate_nic(nic, f"nics[{i}]")
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
        if spec.machine == "q35" and any(disk_bus(d) == "ide" for d in spec.disks):
            raise InvalidInput("machine q35 has no IDE bus: put the disk on sata, or choose "
                               "machine pc (i440fx)", field="machine")
    _check_choice(spec.firmware, FIRMWARES, "firmware")
    if spec.secure_boot is not False:
        if spec.secure_boot is not True:
            raise InvalidInput("secure_boot must be true or false", field="secure_boot")
        if spec.firmware != "uefi":
            raise InvalidInput("secure_boot needs firmware uefi", field="secure_boot")
        if machine_type(spec, [disk_bus(d) for d in spec.disks]) != "q35":
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
            check_int_range(part, 1, MAX_VCPUS, "topology")
        sockets, cores, threads = spec.topology
        if sockets * cores * threads != max_vcpus(spec):
            raise InvalidInput(f"sockets x cores x threads ({sockets} x {cores} x {threads}) "
                               f"must equal the {max_vcpus(spec)} vCPUs (the most it can "
                               "run)", field="topology")




def _validate_placement(spec: DomainSpec) -> None:
    """vCPU pins, emulator CPUs, guest NUMA cells and their host nodes, huge pages."""
    most = max_vcpus(spec)
    if spec.vcpu_pins and len(spec.vcpu_pins) != most:
        raise InvalidInput(f"vcpu_pins names {len(spec.vcpu_pins)} host CPUs for {most} vCPUs: "
                           "one host CPU per vCPU", field="vcpu_pins")
    for field in ("vcpu_pins", "emulator_cpus"):
        for cpu in getattr(spec, field):
            check_int_range(cpu, 0, MAX_CPU, field)
    check_int_range(spec.numa_cells, 0, most, "numa_cells")
    if spec.numa_nodes:
        if len(spec.numa_nodes) != spec.numa_cells:
            raise InvalidInput(f"numa_nodes binds {len(spec.numa_nodes)} cells of "
                               f"{spec.numa_cells}: one host node per guest cell",
                               field="numa_nodes")
        for node in spec.numa_nodes:
            check_int_range(node, 0, MAX_NUMA_NODE, "numa_nodes")
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


def validate_disk(disk: DiskSpec, where: str) -> None:
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
        if not disk.target.startswith(TARGET_PREFIX[disk_bus(disk)]):
            raise InvalidInput(f"target {disk.target} does not fit the {disk_bus(disk)} bus",
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
        check_int_range(port, 1, 65535, f"{where}.hosts")


def validate_nic(nic: NicSpec, where: str) -> None:
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
        check_int_range(nic.vlan, 1, 4094, f"{where}.vlan")
        if nic.virtualport != "openvswitch":
            raise InvalidInput("libvirt tags a port with a VLAN only on an Open vSwitch bridge",
                               field=f"{where}.vlan")
    if nic.mtu is not None:
        check_int_range(nic.mtu, 576, 65535, f"{where}.mtu")
    if nic.target is not None and (
            not isinstance(nic.target, str) or not _TAP_RE.fullmatch(nic.target)
            or nic.target.startswith(("vnet", "vif", "macvtap", "macvlan"))):
        raise InvalidInput(f"target {nic.target!r} must be 1-15 letters, digits, '_' or '-' "
                           "and not start with a prefix libvirt reserves (vnet, vif, macv*)",
                           field=f"{where}.target")
    for name in ("inbound_kbps", "outbound_kbps"):
        value = getattr(nic, name)
        if value is not None:
            check_int_range(value, 1, MAX_BANDWIDTH_KBPS, f"{where}.{name}")


_TAP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,14}")
MAX_BANDWIDTH_KBPS = 2**32 - 1  # libvirt keeps rates in an unsigned int (KiB/s)


def check_int_range(value: object, low: int, high: int, field: str) -> None:
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
