"""What the designer designs from: a VM's disks, NICs and domain as plain values (no policy),
with the limits and choices every value is checked against (corral.domainxml.spec_checks)."""

from __future__ import annotations

from dataclasses import dataclass

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
HUGEPAGE_KIB = (2048, 1024 * 1024)  # x86-64: 2M and 1G
MAX_NUMA_NODE = 1023  # the kernel's MAX_NUMNODES ceiling
DIMM_STEP_MIB = 128  # Linux onlines hot-added memory in blocks of 128 MiB (x86-64)

TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


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


def disk_bus(disk: DiskSpec) -> str:
    # virtio-blk cannot hold removable media.
    return "sata" if disk.device == "cdrom" and disk.bus == "virtio" else disk.bus


def max_vcpus(spec: DomainSpec) -> int:
    """The most vCPUs the domain can run: its hot-plug ceiling, or its vCPUs."""
    return spec.max_vcpus if spec.max_vcpus is not None else spec.vcpus


def machine_type(spec: DomainSpec, buses: list[str]) -> str:
    """q35 unless asked, or pc (i440fx) when a disk is on IDE (q35 has no IDE controller)."""
    if spec.machine is not None:
        return spec.machine  # validate_spec refused q35 with an IDE disk
    return "pc" if "ide" in buses else "q35"
