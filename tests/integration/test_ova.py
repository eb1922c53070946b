"""OVA export and import on a real node: a VM exported (OVF 1.0 + manifest +
streamOptimized VMDK, checked with tar, sha256 and qemu-img), imported back with its CPUs,
memory, MAC and disk bytes, and an OVA written the way VMware's ovftool lays one out."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from nodeutil import Node

pytestmark = pytest.mark.integration

MIB = 1 << 20


def _refused(node: Node, *args: str) -> str:
    proc = node.cli(*args, check=False)
    assert proc.returncode == 2, f"expected a refusal: {proc.stdout}\n{proc.stderr}"
    return proc.stderr


def _same_disk(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False,
                          timeout=120).returncode == 0


def _show(node: Node, vm: str) -> Any:
    return node.cli_json("vm", "show", vm)


FOREIGN = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:vmw="http://www.vmware.com/schema/ovf"
 xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="appliance-disk1.vmdk" ovf:id="file1" ovf:size="SIZE"/></References>
  <DiskSection><Info>Virtual disk information</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1"
     ovf:fileRef="file1"
     ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>Networks</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="appliance">
    <Info>A virtual machine</Info><Name>sn-appliance</Name>
    <VirtualHardwareSection><Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item><rasd:ElementName>3 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>3</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>192MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>192</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:12:34:56</rasd:Address><rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def test_ova_round_trip_and_foreign_ova(node: Node) -> None:
    work = node.data_dir.parent / "ova"
    work.mkdir(exist_ok=True)
    storage = node.data_dir / "agent" / "storage"
    vm, back, foreign = "sn-ova", "sn-ova-back", "sn-appliance"
    ova = work / f"{vm}.ova"
    try:
        node.cli("vm", "create", vm, "--image", "tiny", "--cpus", "2", "--memory", "160M")
        mac = _show(node, vm)["mac"]
        node.cli("vm", "export", vm, "--ova", str(ova))
        with tarfile.open(ova) as tar:
            assert tar.getnames() == [f"{vm}.ovf", f"{vm}.mf", "disk1.vmdk"]  # .ovf first
            assert all(m.type == tarfile.REGTYPE for m in tar.getmembers())
            tar.extractall(work / "x", filter="data")
        manifest = (work / "x" / f"{vm}.mf").read_text().splitlines()
        for line in manifest:
            name, digest = line.removeprefix("SHA256(").split(")= ")
            assert hashlib.sha256((work / "x" / name).read_bytes()).hexdigest() == digest
        info = json.loads(subprocess.run(
            ["qemu-img", "info", "--output=json", str(work / "x" / "disk1.vmdk")],
            capture_output=True, text=True, check=True).stdout)
        assert info["format"] == "vmdk"
        assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
        descriptor = (work / "x" / f"{vm}.ovf").read_text()
        assert "<rasd:VirtualQuantity>160</rasd:VirtualQuantity>" in descriptor
        assert _same_disk(storage / "vms" / f"{vm}.qcow2", work / "x" / "disk1.vmdk")

        assert "exists already" in _refused(node, "vm", "export", vm, "--ova", str(ova))
        assert "[file]" in _refused(node, "vm", "import-ova", str(work / "nope.ova"))
        (work / "bad.ova").write_bytes(b"not a tar")
        assert "not a readable OVA" in _refused(node, "vm", "import-ova", str(work / "bad.ova"))

        node.cli("vm", "delete", vm)  # its MAC is free again: the import keeps it
        node.cli("vm", "import-ova", str(ova), "--name", back)
        got = _show(node, back)
        assert (got["cpus"], got["memory_mib"], got["mac"]) == (2, 160, mac)
        assert _same_disk(storage / "images" / f"{back}-ova.qcow2", work / "x" / "disk1.vmdk")
        assert _same_disk(storage / "vms" / f"{back}.qcow2", work / "x" / "disk1.vmdk")

        # An OVA as VMware's ovftool writes one (vmw namespace, SCSI controller, vmxnet3).
        raw = work / "appliance.raw"
        with raw.open("wb") as f:
            f.truncate(64 * MIB)
            f.seek(5 * MIB)
            f.write(b"appliance-data" * 100)
        vmdk = work / "appliance-disk1.vmdk"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                        "subformat=streamOptimized", str(raw), str(vmdk)], check=True)
        desc = work / "appliance.ovf"
        desc.write_text(FOREIGN.replace("SIZE", str(vmdk.stat().st_size)))
        foreign_ova = work / "appliance.ova"
        with tarfile.open(foreign_ova, "w", format=tarfile.USTAR_FORMAT) as tar:
            tar.add(desc, arcname=desc.name)
            tar.add(vmdk, arcname=vmdk.name)
        node.cli("vm", "import-ova", str(foreign_ova))  # the descriptor's name
        got = _show(node, foreign)
        assert (got["cpus"], got["memory_mib"], got["mac"]) == (3, 192, "00:50:56:12:34:56")
        assert got["disk_bytes"] == 64 * MIB
        assert _same_disk(storage / "vms" / f"{foreign}.qcow2", raw)
        assert "already exists" in _refused(node, "vm", "import-ova", str(foreign_ova))
    finally:
        for name in (vm, back, foreign):
            node.cli("vm", "delete", name, "--force", check=False)
        for image in (f"{back}-ova", f"{foreign}-ova"):
            node.cli("image", "delete", image, check=False)
