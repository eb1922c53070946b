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


def test_ova_with_an_attached_volume_round_trips_and_a_broken_one_leaves_nothing(
        node: Node) -> None:
    """A VM with a data volume exports two VMDKs; the import attaches the second disk as a
    volume with the same bytes. An OVA whose second disk is missing fails and leaves no VM,
    volume or image."""
    work = node.data_dir.parent / "ova2"
    work.mkdir(exist_ok=True)
    storage = node.data_dir / "agent" / "storage"
    vm, back, broken = "sn-ova2", "sn-ova2-back", "sn-ova2-broken"
    ova, cut = work / f"{vm}.ova", work / "cut.ova"
    try:
        node.cli("vm", "create", vm, "--image", "tiny")
        node.cli("volume", "create", f"default/{vm}-data", "--size", "16M")
        data = storage / f"{vm}-data.qcow2"
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 2M", str(data)],
                       check=True, capture_output=True, timeout=60)
        node.cli("vm", "disk", "attach", vm, "--volume", f"default/{vm}-data")
        node.cli("vm", "export", vm, "--ova", str(ova))
        with tarfile.open(ova) as tar:
            assert tar.getnames() == [f"{vm}.ovf", f"{vm}.mf", "disk1.vmdk", "disk2.vmdk"]
            tar.extractall(work / "x", filter="data")
        assert (work / "x" / f"{vm}.ovf").read_text().count("<ovf:Disk ") == 2
        assert _same_disk(data, work / "x" / "disk2.vmdk")

        node.cli("vm", "import-ova", str(ova), "--name", back)
        disks = node.cli_json("vm", "disk", "list", back)
        assert isinstance(disks, list)
        vols = [d for d in disks if d["kind"] == "volume"]
        assert [(d["volume"], d["size"]) for d in vols] == [(f"default/{back}-disk2", 16 * MIB)]
        assert _same_disk(storage / f"{back}-disk2.qcow2", data)

        # The same OVA without its second disk: refused during the import, nothing stays.
        with tarfile.open(ova) as src, tarfile.open(cut, "w", format=tarfile.USTAR_FORMAT) as dst:
            for member in src.getmembers():
                if member.name != "disk2.vmdk":
                    dst.addfile(member, src.extractfile(member))
        proc = node.cli("vm", "import-ova", str(cut), "--name", broken, check=False)
        assert proc.returncode != 0
        assert "disk2.vmdk" in proc.stdout + proc.stderr
        assert node.cli("vm", "show", broken, check=False).returncode != 0
        vol_names = [v["name"] for v in node.cli_json("volume", "list")]  # type: ignore[union-attr]
        assert not [n for n in vol_names if broken in n]
        images = [i["name"] for i in node.cli_json("image", "list")]  # type: ignore[union-attr]
        assert f"{broken}-ova" not in images
        assert not list((storage / "images").glob(f"{broken}*"))
        assert not list(storage.glob(f"*{broken}*"))
    finally:
        for name in (vm, back, broken):
            node.cli("vm", "delete", name, "--force", check=False)
        for ref in (f"default/{vm}-data", f"default/{back}-disk2", f"default/{broken}-disk2"):
            node.cli("volume", "delete", ref, check=False)
        for image in (f"{back}-ova", f"{broken}-ova"):
            node.cli("image", "delete", image, check=False)
