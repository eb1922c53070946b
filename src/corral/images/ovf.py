"""OVF 1.x descriptors (DMTF DSP0243) and OVA packages: write one for a VM, read one back.

An OVA is a USTAR tar whose first member is the ``.ovf`` descriptor, then the manifest
(``.mf``: ``SHA256(FILE)= HEX`` lines), then the files it references (here streamOptimized
VMDK disks). The descriptor's parts used here, as the schema names them:

- ``References/File`` (``ovf:id``, ``ovf:href``, ``ovf:size``);
- ``DiskSection/Disk`` (``ovf:diskId``, ``ovf:fileRef``, ``ovf:capacity`` with
  ``ovf:capacityAllocationUnits`` such as ``byte * 2^30``, ``ovf:format``);
- ``NetworkSection/Network`` (``ovf:name``);
- ``VirtualSystem`` (``ovf:id``) / ``VirtualHardwareSection`` / ``Item``s, by
  ``rasd:ResourceType`` (CIM_ResourceAllocationSettingData): 3 processor
  (``rasd:VirtualQuantity``), 4 memory (``rasd:VirtualQuantity`` in ``rasd:AllocationUnits``,
  e.g. ``byte * 2^20``), 17 disk drive (``rasd:HostResource`` = ``ovf:/disk/ID``), 10
  Ethernet adapter (``rasd:Connection``, ``rasd:Address``: the MAC, ``rasd:ResourceSubType``).

Reading accepts what other tools write (VMware's ovftool, VirtualBox): elements are matched
by local name, allocation units in the ``byte * 2^N`` and ``MegaBytes`` styles.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from corral.errors import InvalidInput

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {"ovf": OVF, "rasd": RASD, "vssd": VSSD, "xsi": XSI}
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
DESCRIPTOR_MAX = 4 << 20
_UNITS = re.compile(r"^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$", re.IGNORECASE)
_NAMED_UNITS = {"bytes": 1, "kilobytes": 1 << 10, "kb": 1 << 10, "megabytes": 1 << 20,
                "mb": 1 << 20, "gigabytes": 1 << 30, "gb": 1 << 30}
_SAFE_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


@dataclass
class OvfDisk:
    file: str  # the member of the OVA holding it
    capacity: int  # bytes


@dataclass
class OvfNic:
    network: str | None
    mac: str | None
    model: str | None


@dataclass
class OvfSystem:
    name: str
    cpus: int = 1
    memory_mib: int = 512
    disks: list[OvfDisk] = field(default_factory=list)
    nics: list[OvfNic] = field(default_factory=list)


def units(text: str | None, default: int = 1) -> int:
    """Bytes per unit of ``byte * 2^20``, ``byte * 1024``, ``MegaBytes``... (InvalidInput)."""
    if not text:
        return default
    m = _UNITS.match(text)
    if m:
        return int(m.group(1)) ** int(m.group(2)) if m.group(1) else 1
    named = _NAMED_UNITS.get(text.strip().lower())
    if named is None:
        raise InvalidInput(f"unknown OVF allocation unit {text!r}", field="file")
    return named


def safe_member(name: str) -> str:
    """An OVA member name that cannot leave the directory it is extracted into."""
    if not _SAFE_MEMBER.fullmatch(name) or ".." in name:
        raise InvalidInput(f"OVA member name {name!r} is not a plain file name", field="file")
    return name


def build(system: OvfSystem, disk_sizes: list[int]) -> bytes:
    """The descriptor of one VM whose disks are ``disk{N}.vmdk`` (sizes: the VMDK files)."""
    def q(ns: str, tag: str) -> str:
        return f"{{{ns}}}{tag}"

    env = etree.Element(q(OVF, "Envelope"), nsmap=NSMAP)
    env.set(q(OVF, "version"), "1.0")
    refs = etree.SubElement(env, q(OVF, "References"))
    for i, size in enumerate(disk_sizes, 1):
        etree.SubElement(refs, q(OVF, "File"), {q(OVF, "id"): f"file{i}",
                                                 q(OVF, "href"): f"disk{i}.vmdk",
                                                 q(OVF, "size"): str(size)})
    disks = etree.SubElement(env, q(OVF, "DiskSection"))
    etree.SubElement(disks, q(OVF, "Info")).text = "Virtual disks"
    for i, disk in enumerate(system.disks, 1):
        etree.SubElement(disks, q(OVF, "Disk"), {
            q(OVF, "diskId"): f"vmdisk{i}", q(OVF, "fileRef"): f"file{i}",
            q(OVF, "capacity"): str(disk.capacity), q(OVF, "capacityAllocationUnits"): "byte",
            q(OVF, "format"): VMDK_FORMAT})
    nets = etree.SubElement(env, q(OVF, "NetworkSection"))
    etree.SubElement(nets, q(OVF, "Info")).text = "Logical networks"
    for net in sorted({n.network for n in system.nics if n.network}):
        etree.SubElement(etree.SubElement(nets, q(OVF, "Network"), {q(OVF, "name"): net}),
                         q(OVF, "Description")).text = f"corral network {net}"
    vs = etree.SubElement(env, q(OVF, "VirtualSystem"), {q(OVF, "id"): system.name})
    etree.SubElement(vs, q(OVF, "Info")).text = "A virtual machine exported by corral"
    etree.SubElement(vs, q(OVF, "Name")).text = system.name
    os_section = etree.SubElement(vs, q(OVF, "OperatingSystemSection"), {q(OVF, "id"): "101"})
    etree.SubElement(os_section, q(OVF, "Info")).text = "Guest operating system"
    etree.SubElement(os_section, q(OVF, "Description")).text = "Linux 64-bit"
    hw = etree.SubElement(vs, q(OVF, "VirtualHardwareSection"))
    etree.SubElement(hw, q(OVF, "Info")).text = "Virtual hardware requirements"
    sysel = etree.SubElement(hw, q(OVF, "System"))
    for tag, text in (("ElementName", "Virtual Hardware Family"), ("InstanceID", "0"),
                      ("VirtualSystemIdentifier", system.name),
                      ("VirtualSystemType", "qemu-kvm")):
        etree.SubElement(sysel, q(VSSD, tag)).text = text
    ids = iter(range(1, 1000))

    def item(fields: list[tuple[str, str]]) -> None:
        el = etree.SubElement(hw, q(OVF, "Item"))
        # rasd elements in the schema's (alphabetical) order
        for tag, text in sorted([*fields, ("InstanceID", str(next(ids)))]):
            etree.SubElement(el, q(RASD, tag)).text = text

    item([("AllocationUnits", "hertz * 10^6"), ("Description", "Number of virtual CPUs"),
          ("ElementName", f"{system.cpus} virtual CPU(s)"), ("ResourceType", "3"),
          ("VirtualQuantity", str(system.cpus))])
    item([("AllocationUnits", "byte * 2^20"), ("Description", "Memory size"),
          ("ElementName", f"{system.memory_mib} MB of memory"), ("ResourceType", "4"),
          ("VirtualQuantity", str(system.memory_mib))])
    for i, _disk in enumerate(system.disks, 1):
        item([("AddressOnParent", str(i - 1)), ("ElementName", f"disk{i}"),
              ("HostResource", f"ovf:/disk/vmdisk{i}"), ("ResourceType", "17")])
    for i, nic in enumerate(system.nics, 1):
        fields = [("AutomaticAllocation", "true"), ("ElementName", f"ethernet{i}"),
                  ("ResourceSubType", nic.model or "virtio"), ("ResourceType", "10")]
        if nic.network:
            fields.append(("Connection", nic.network))
        if nic.mac:
            fields.append(("Address", nic.mac))
        item(fields)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _attr(el: etree._Element, name: str) -> str | None:
    """An attribute by local name (ovf:capacity, or unqualified in some writers)."""
    for key, value in el.attrib.items():
        if etree.QName(key).localname == name:
            return str(value)
    return None


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el.iter() if isinstance(c.tag, str) and _local(c) == name]


def _text(el: etree._Element, name: str) -> str | None:
    for c in el:
        if isinstance(c.tag, str) and _local(c) == name:
            return (c.text or "").strip()
    return None


def parse(data: bytes) -> OvfSystem:
    """The first VirtualSystem of a descriptor (InvalidInput naming what is wrong)."""
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        env = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"the OVF descriptor is not valid XML: {exc}", field="file") from None
    if _local(env) != "Envelope":
        raise InvalidInput("the OVF descriptor's root is not an Envelope", field="file")
    files = {_attr(f, "id"): _attr(f, "href") for f in _children(env, "File")}
    disks: dict[str, OvfDisk] = {}
    for d in _children(env, "Disk"):
        href = files.get(_attr(d, "fileRef"))
        capacity = _attr(d, "capacity")
        if href is None or capacity is None:
            raise InvalidInput(f"OVF disk {_attr(d, 'diskId')} has no file or capacity",
                               field="file")
        disks[_attr(d, "diskId") or ""] = OvfDisk(
            file=safe_member(href),
            capacity=int(capacity) * units(_attr(d, "capacityAllocationUnits")))
    systems = _children(env, "VirtualSystem")
    if not systems:
        raise InvalidInput("the OVF descriptor has no VirtualSystem", field="file")
    vs = systems[0]
    name = _text(vs, "Name") or _attr(vs, "id") or "imported"
    system = OvfSystem(name=name)
    for item in _children(vs, "Item"):
        rtype = _text(item, "ResourceType")
        qty = _text(item, "VirtualQuantity")
        if rtype == "3" and qty:
            system.cpus = int(qty)
        elif rtype == "4" and qty:
            system.memory_mib = int(qty) * units(_text(item, "AllocationUnits"), 1 << 20) >> 20
        elif rtype == "17":
            ref = (_text(item, "HostResource") or "").rsplit("/", 1)[-1]
            if ref in disks:
                system.disks.append(disks[ref])
        elif rtype == "10":
            system.nics.append(OvfNic(network=_text(item, "Connection"),
                                      mac=_text(item, "Address"),
                                      model=_text(item, "ResourceSubType")))
    if not system.disks:
        raise InvalidInput("the OVF descriptor's VirtualSystem has no disk", field="file")
    return system


def read_descriptor(ova: Path) -> bytes:
    """The ``.ovf`` member of an OVA (the first one, as the OVF spec requires)."""
    try:
        with tarfile.open(ova, "r:") as tar:
            for member in tar:
                if member.name.endswith(".ovf") and member.isfile():
                    if member.size > DESCRIPTOR_MAX:
                        raise InvalidInput("the OVF descriptor is too large", field="file")
                    f = tar.extractfile(member)
                    assert f is not None
                    return f.read()
    except (tarfile.TarError, OSError) as exc:
        raise InvalidInput(f"{ova} is not a readable OVA (tar) file: {exc}", field="file") from None
    raise InvalidInput(f"{ova} holds no .ovf descriptor", field="file")
