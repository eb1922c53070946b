"""Typed model of ``<devices>`` and the devices corral writes.

Devices libvirt adds by itself (controllers, inputs, ...) are modelled lightly so they can
be read back; everything else under ``<devices>`` is kept untouched.
"""

from __future__ import annotations

from lxml import etree

from corral.domainxml.xmlnode import (
    BoolProperty,
    Child,
    Children,
    FlagProperty,
    IntProperty,
    PropPath,
    StrProperty,
    XMLNode,
    insert_ordered,
    parse_int,
)


class Device(XMLNode):
    """Common to all devices: libvirt's alias and guest address (filled in by libvirt)."""

    alias = StrProperty("alias/@name")
    address_type = StrProperty("address/@type")


class Disk(Device):
    """``<disk type='file'|'block'|'network' device='disk'|'cdrom'>``."""

    TAG = "disk"
    CHILD_ORDER = (
        "driver", "source", "backingStore", "backenddomain", "mirror", "target", "iotune",
        "boot", "readonly", "shareable", "transient", "serial", "wwn", "vendor", "product",
        "encryption", "alias", "address",
    )  # fmt: skip

    type = StrProperty("@type")  # file | block | network | volume
    device = StrProperty("@device")  # disk | cdrom | floppy | lun
    driver_name = StrProperty("driver/@name")  # qemu
    driver_type = StrProperty("driver/@type")  # qcow2 | raw
    driver_cache = StrProperty("driver/@cache")  # none | writeback | writethrough | ...
    driver_discard = StrProperty("driver/@discard")  # unmap | ignore
    driver_io = StrProperty("driver/@io")  # native | threads | io_uring
    source_file = StrProperty("source/@file")
    source_dev = StrProperty("source/@dev")
    source_protocol = StrProperty("source/@protocol")  # type='network': rbd | nbd | iscsi ...
    source_name = StrProperty("source/@name")  # type='network': e.g. rbd POOL/IMAGE
    target_dev = StrProperty("target/@dev")  # vda, sda, ...
    target_bus = StrProperty("target/@bus")  # virtio | scsi | sata | ide | usb
    boot_order = IntProperty("boot/@order")
    readonly = FlagProperty("readonly")
    shareable = FlagProperty("shareable")
    serial = StrProperty("serial")

    @property
    def source_path(self) -> str | None:
        """The file or block device behind the disk, whichever the type uses (for a network
        disk: its source name, e.g. ``POOL/IMAGE`` of an RBD image)."""
        if self.type == "network":
            return self.source_name
        return self.source_dev if self.type == "block" else self.source_file

    @property
    def source_hosts(self) -> list[tuple[str, int | None]]:
        """``<source><host name=... port=.../>...`` of a network disk: (name, port) pairs."""
        source = self._find(PropPath("source"))
        if source is None:
            return []
        hosts = []
        for host in source.findall("host"):
            port = host.get("port")
            hosts.append((host.get("name", ""), parse_int(port) if port else None))
        return hosts

    @source_hosts.setter
    def source_hosts(self, hosts: list[tuple[str, int | None]]) -> None:
        source = self._find(PropPath("source"))
        if source is None:
            if not hosts:
                return
            source = etree.Element("source")
            insert_ordered(self.element, source, self._order)
        for old in source.findall("host"):
            source.remove(old)
        for index, (name, port) in enumerate(hosts):
            host = etree.Element("host", name=name)
            if port is not None:
                host.set("port", str(port))
            source.insert(index, host)  # libvirt writes the hosts first in <source>


class Controller(Device):
    """``<controller type=... index=... model=...>``."""

    TAG = "controller"
    type = StrProperty("@type")  # pci | usb | scsi | sata | virtio-serial | ide
    index = IntProperty("@index")
    model = StrProperty("@model")  # pcie-root | qemu-xhci | virtio-scsi | ...


class Interface(Device):
    """``<interface type='bridge'|'network'>``."""

    TAG = "interface"
    CHILD_ORDER = (
        "mac", "source", "vlan", "virtualport", "ip", "route", "script", "target", "guest",
        "model", "driver", "backend", "filterref", "tune", "bandwidth", "mtu", "link", "boot",
        "rom",
        "alias", "address",
    )  # fmt: skip

    type = StrProperty("@type")  # bridge | network | ethernet | user
    mac = StrProperty("mac/@address")
    source_bridge = StrProperty("source/@bridge")
    source_network = StrProperty("source/@network")
    virtualport_type = StrProperty("virtualport/@type")  # openvswitch
    vlan_tag = IntProperty("vlan/tag/@id")  # one untagged VLAN (OVS, SR-IOV)
    target_dev = StrProperty("target/@dev")  # vnet0 (host tap name)
    model = StrProperty("model/@type")  # virtio | e1000 | ...
    mtu = IntProperty("mtu/@size")
    bandwidth_inbound = IntProperty("bandwidth/inbound/@average")  # KiB/s
    bandwidth_outbound = IntProperty("bandwidth/outbound/@average")  # KiB/s
    link_state = StrProperty("link/@state")  # up | down
    boot_order = IntProperty("boot/@order")


class CharDevice(Device):
    """Common to ``<serial>``, ``<console>`` and ``<channel>``."""

    CHILD_ORDER = ("source", "log", "protocol", "target", "alias", "address")

    type = StrProperty("@type")  # pty | unix | file | ...
    source_path = StrProperty("source/@path")  # pty: filled in by libvirt when running
    source_mode = StrProperty("source/@mode")  # unix: bind | connect
    target_type = StrProperty("target/@type")
    target_port = IntProperty("target/@port")
    log_file = StrProperty("log/@file")
    log_append = BoolProperty("log/@append", true="on", false="off")


class Serial(CharDevice):
    """``<serial>``: the guest's serial port (``target type='isa-serial'``)."""

    TAG = "serial"
    target_model = StrProperty("target/model/@name")


class Console(CharDevice):
    """``<console>``: ``target type='serial'`` aliases the first serial port."""

    TAG = "console"


class Channel(CharDevice):
    """``<channel>``: e.g. the qemu-guest-agent socket (``target name=...0``)."""

    TAG = "channel"
    target_name = StrProperty("target/@name")  # org.qemu.guest_agent.0
    target_state = StrProperty("target/@state")  # connected | disconnected (live XML)


class Input(Device):
    """``<input type='mouse'|'keyboard'|'tablet' bus=...>``."""

    TAG = "input"
    type = StrProperty("@type")
    bus = StrProperty("@bus")


class TPM(Device):
    """``<tpm model='tpm-crb'|'tpm-tis'>`` with an emulated backend (swtpm, its state kept
    by libvirt per domain and removed when the domain is undefined)."""

    TAG = "tpm"
    CHILD_ORDER = ("backend", "alias", "address")

    model = StrProperty("@model")
    backend_type = StrProperty("backend/@type")  # emulator | passthrough
    backend_version = StrProperty("backend/@version")  # 1.2 | 2.0


class Graphics(Device):
    """``<graphics type='vnc'>`` with one ``<listen type='address'>``."""

    TAG = "graphics"
    CHILD_ORDER = ("listen", "image", "audio")

    type = StrProperty("@type")  # vnc | spice
    port = IntProperty("@port")  # -1 with autoport
    autoport = BoolProperty("@autoport")
    websocket = IntProperty("@websocket")
    listen = StrProperty("@listen")  # libvirt mirrors listen/@address here
    listen_type = StrProperty("listen/@type")  # address | network | socket | none
    listen_address = StrProperty("listen/@address")
    passwd = StrProperty("@passwd")


class Video(Device):
    """``<video><model type=...>``."""

    TAG = "video"
    CHILD_ORDER = ("driver", "model", "alias", "address")

    model_type = StrProperty("model/@type")  # vga | virtio | qxl | cirrus | none
    model_vram = IntProperty("model/@vram")
    model_heads = IntProperty("model/@heads")
    model_primary = BoolProperty("model/@primary")


class Watchdog(Device):
    """``<watchdog model='i6300esb' action=...>``: what the host does when the guest's
    watchdog driver stops feeding it (reset, poweroff, shutdown, pause, dump, inject-nmi)."""

    TAG = "watchdog"
    CHILD_ORDER = ("alias", "address")

    model = StrProperty("@model")  # i6300esb | ib700 | diag288 | itco
    action = StrProperty("@action")


class RNG(Device):
    """``<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>``."""

    TAG = "rng"
    CHILD_ORDER = ("rate", "backend", "alias", "address")

    model = StrProperty("@model")
    backend_model = StrProperty("backend/@model")  # random | egd | builtin
    backend_path = StrProperty("backend")
    rate_bytes = IntProperty("rate/@bytes")
    rate_period = IntProperty("rate/@period")


class MemBalloon(Device):
    """``<memballoon model='virtio'|'none'>``."""

    TAG = "memballoon"
    CHILD_ORDER = ("alias", "stats", "address")

    model = StrProperty("@model")
    autodeflate = BoolProperty("@autodeflate", true="on", false="off")
    stats_period = IntProperty("stats/@period")


class MemoryDevice(Device):
    """``<memory model='dimm'><target><size unit='KiB'>N</size><node>C</node></target>``:
    memory plugged into a running guest (libvirt fills its ``<address type='dimm'>``)."""

    TAG = "memory"
    CHILD_ORDER = ("source", "target", "alias", "address")

    model = StrProperty("@model")  # dimm | nvdimm | virtio-mem | ...
    target_size = IntProperty("target/size")  # in target_size_unit (libvirt writes KiB)
    target_size_unit = StrProperty("target/size/@unit")
    target_node = IntProperty("target/node")  # the guest NUMA cell it joins
    address_slot = IntProperty("address/@slot")


class Devices(XMLNode):
    """``<devices>``: add with ``devices.add(Disk())``, remove with ``devices.remove(d)``."""

    TAG = "devices"
    CHILD_ORDER = (
        "emulator", "disk", "controller", "lease", "filesystem", "interface", "smartcard",
        "serial", "parallel", "console", "channel", "input", "tpm", "graphics", "sound",
        "audio", "video", "hostdev", "redirdev", "redirfilter", "hub", "watchdog",
        "memballoon", "rng", "shmem", "memory", "iommu", "vsock", "crypto", "panic",
    )  # fmt: skip

    emulator = StrProperty("emulator")  # left out: libvirt picks the host's default
    disks = Children(Disk)
    controllers = Children(Controller)
    interfaces = Children(Interface)
    serials = Children(Serial)
    consoles = Children(Console)
    channels = Children(Channel)
    inputs = Children(Input)
    tpms = Children(TPM)
    graphics = Children(Graphics)
    videos = Children(Video)
    watchdogs = Children(Watchdog)
    rngs = Children(RNG)
    memballoon = Child(MemBalloon)
    memories = Children(MemoryDevice)
