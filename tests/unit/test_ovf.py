"""OVF descriptors (corral.images.ovf): what corral writes, checked field by field against
the DMTF OVF 1.x envelope schema (dsp8023) and the CIM RASD/VSSD schemas, and what other
tools write (VMware ovftool and VirtualBox conventions), read back."""

from __future__ import annotations

import tarfile
from io import BytesIO
from pathlib import Path

import pytest
from lxml import etree

from corral.errors import InvalidInput
from corral.images import ovf

OV = "{http://schemas.dmtf.org/ovf/envelope/1}"
R = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
V = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData}"
GIB = 1 << 30


def _system() -> ovf.OvfSystem:
    return ovf.OvfSystem(name="web", cpus=2, memory_mib=384,
                         disks=[ovf.OvfDisk(file="disk1.vmdk", capacity=3 * GIB)],
                         nics=[ovf.OvfNic(network="default", mac="52:54:00:aa:bb:cc",
                                          model="virtio")])


def test_written_descriptor_follows_the_dmtf_schema() -> None:
    env = etree.fromstring(ovf.build(_system(), [12345]))
    assert env.tag == f"{OV}Envelope" and env.get(f"{OV}version") == "1.0"
    # Envelope's sequence: References, then sections, then the content (VirtualSystem).
    assert [etree.QName(c).localname for c in env] == [
        "References", "DiskSection", "NetworkSection", "VirtualSystem"]
    file = env.find(f"{OV}References/{OV}File")
    assert file is not None
    assert (file.get(f"{OV}id"), file.get(f"{OV}href"), file.get(f"{OV}size")) == (
        "file1", "disk1.vmdk", "12345")
    for section in ("DiskSection", "NetworkSection"):  # every Section starts with its Info
        el = env.find(f"{OV}{section}")
        assert el is not None and etree.QName(el[0]).localname == "Info"
    disk = env.find(f"{OV}DiskSection/{OV}Disk")
    assert disk is not None
    assert disk.get(f"{OV}diskId") == "vmdisk1" and disk.get(f"{OV}fileRef") == "file1"
    assert int(disk.get(f"{OV}capacity") or 0) == 3 * GIB
    assert disk.get(f"{OV}capacityAllocationUnits") == "byte"
    assert disk.get(f"{OV}format") == ovf.VMDK_FORMAT
    vs = env.find(f"{OV}VirtualSystem")
    assert vs is not None and vs.get(f"{OV}id") == "web"
    assert [etree.QName(c).localname for c in vs] == [
        "Info", "Name", "OperatingSystemSection", "VirtualHardwareSection"]
    os_section = vs.find(f"{OV}OperatingSystemSection")
    assert os_section is not None and os_section.get(f"{OV}id") == "101"  # CIM OS: Linux 64
    hw = vs.find(f"{OV}VirtualHardwareSection")
    assert hw is not None
    assert [etree.QName(c).localname for c in hw][:2] == ["Info", "System"]
    system = hw.find(f"{OV}System")
    assert system is not None
    assert [etree.QName(c).localname for c in system] == [
        "ElementName", "InstanceID", "VirtualSystemIdentifier", "VirtualSystemType"]
    assert all(c.tag.startswith(V) for c in system)
    items = hw.findall(f"{OV}Item")
    ids = []
    for item in items:
        names = [etree.QName(c).localname for c in item]
        assert all(c.tag.startswith(R) for c in item)
        assert names == sorted(names)  # the RASD schema's xs:sequence is alphabetical
        assert {"ElementName", "InstanceID", "ResourceType"} <= set(names)  # required ones
        ids.append(item.findtext(f"{R}InstanceID"))
    assert len(set(ids)) == len(ids)  # InstanceID unique within the section
    by_type = {i.findtext(f"{R}ResourceType"): i for i in items}
    assert by_type["3"].findtext(f"{R}VirtualQuantity") == "2"
    assert by_type["4"].findtext(f"{R}VirtualQuantity") == "384"
    assert by_type["4"].findtext(f"{R}AllocationUnits") == "byte * 2^20"
    assert by_type["17"].findtext(f"{R}HostResource") == "ovf:/disk/vmdisk1"
    assert by_type["10"].findtext(f"{R}Connection") == "default"
    assert by_type["10"].findtext(f"{R}Address") == "52:54:00:aa:bb:cc"


def test_round_trip() -> None:
    back = ovf.parse(ovf.build(_system(), [1]))
    assert back == _system()


# What VMware's ovftool writes (OVF 1.0; vmw extensions, capacity in GiB, vmxnet3).
VMWARE = b"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-123" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"
 xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:vmw="http://www.vmware.com/schema/ovf"
 xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="photon-disk1.vmdk" ovf:id="file1" ovf:size="4096"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1"
     ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
     ovf:populatedSize="1024"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="photon">
    <Info>A virtual machine</Info>
    <Name>photon</Name>
    <OperatingSystemSection ovf:id="36" vmw:osType="other3xLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>photon</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>4 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>4</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def test_reads_a_vmware_descriptor() -> None:
    s = ovf.parse(VMWARE)
    assert (s.name, s.cpus, s.memory_mib) == ("photon", 4, 2048)
    assert s.disks == [ovf.OvfDisk(file="photon-disk1.vmdk", capacity=16 * GIB)]
    assert s.nics == [ovf.OvfNic(network="VM Network", mac=None, model="VmxNet3")]


def test_reads_virtualbox_units() -> None:
    vbox = VMWARE.replace(b"byte * 2^20", b"MegaBytes").replace(
        b'ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^30"',
        b'ovf:capacity="17179869184"')
    s = ovf.parse(vbox)
    assert s.memory_mib == 2048 and s.disks[0].capacity == 16 * GIB


@pytest.mark.parametrize("bad, what", [
    (b"not xml", "not valid XML"),
    (b"<Foo/>", "not an Envelope"),
    (VMWARE.replace(b'ovf:href="photon-disk1.vmdk"', b'ovf:href="../../etc/passwd"'),
     "not a plain file name"),
    (VMWARE.replace(b"ovf:/disk/vmdisk1", b"ovf:/disk/nope"), "has no disk"),
    (VMWARE.replace(b"byte * 2^20", b"furlongs"), "unknown OVF allocation unit"),
])
def test_bad_descriptors_are_refused(bad: bytes, what: str) -> None:
    with pytest.raises(InvalidInput, match=what):
        ovf.parse(bad)


def test_entities_are_not_expanded() -> None:
    evil = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            + VMWARE.split(b"?>", 1)[1].replace(b"<Name>photon</Name>", b"<Name>&e;</Name>"))
    assert "root:" not in ovf.parse(evil).name


def test_read_descriptor_from_an_ova(tmp_path: Path) -> None:
    ova = tmp_path / "x.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("photon.ovf")
        info.size = len(VMWARE)
        tar.addfile(info, BytesIO(VMWARE))
    assert ovf.read_descriptor(ova) == VMWARE
    (tmp_path / "not.ova").write_bytes(b"hello")
    with pytest.raises(InvalidInput, match="not a readable OVA"):
        ovf.read_descriptor(tmp_path / "not.ova")
