"""Designed domains defined and started on libvirt's test driver, read back through the model.

Each test opens its own ``test:///`` connection on a node XML file in ``tmp_path`` (never
the process-wide ``test:///default``), so tests share no state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from domainxml_specs import DESIGNED, KVM_FULL, QEMU_TINY

from corral.domainxml import Disk, Domain, design_domain, vm_id_of

NODE_XML = """\
<node>
  <cpu>
    <nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>
    <active>4</active><mhz>2000</mhz><model>x86_64</model>
  </cpu>
  <memory>16777216</memory>
</node>
"""


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Any]:
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    connection = libvirt.open("test://" + str(node))
    assert connection.listAllDomains() == []
    yield connection
    connection.close()


def start(conn: Any, xml: str) -> Any:
    dom = conn.defineXML(xml)
    dom.create()
    assert dom.isActive()
    return dom


@pytest.mark.parametrize("filename", sorted(DESIGNED))
def test_define_start_and_read_back(conn: Any, filename: str) -> None:
    spec = DESIGNED[filename]
    designed = design_domain(spec)
    virdom = start(conn, designed.to_xml())

    live = Domain.from_xml(virdom.XMLDesc(0))
    assert live.runtime_id is not None and live.runtime_id > 0
    assert (live.type, live.name, live.uuid) == (spec.virt_type, spec.name, designed.uuid)
    assert live.vm_id == spec.vm_id
    assert live.memory_kib == spec.memory_mib * 1024
    assert live.vcpu == (spec.max_vcpus or spec.vcpus)  # <vcpu> is the most it can run
    assert live.max_memory_kib == (spec.memory_max_mib and spec.memory_max_mib * 1024)
    assert live.os.machine == designed.os.machine
    assert live.os.kernel == spec.kernel
    assert live.os.cmdline == spec.cmdline
    # libvirt keeps disks sorted by bus and target name
    assert sorted((d.target_dev, d.target_bus, d.source_path) for d in live.devices.disks) == sorted(
        (d.target_dev, d.target_bus, d.source_path) for d in designed.devices.disks
    )
    assert [(n.mac, n.source_bridge, n.model) for n in live.devices.interfaces] == [
        (n.mac, n.source_bridge, n.model) for n in designed.devices.interfaces
    ]
    assert live.devices.serials[0].log_file == spec.console_log
    assert live.devices.channels[0].target_name == "org.qemu.guest_agent.0"
    assert len(live.devices.graphics) == (1 if spec.vnc else 0)
    assert (live.on_poweroff, live.on_reboot, live.on_crash) == ("destroy", "restart", "destroy")
    assert (live.cpu.mode == "host-model") == (spec.virt_type == "kvm")  # the default policy
    assert vm_id_of(virdom.XMLDesc(0)) == spec.vm_id


def test_find_by_uuid_and_metadata(conn: Any) -> None:
    start(conn, design_domain(KVM_FULL).to_xml())
    start(conn, design_domain(QEMU_TINY).to_xml())
    found = {vm_id_of(d.XMLDesc(0)): d.name() for d in conn.listAllDomains()}
    assert found == {"vm-01hzx3k7q2": "web-1", "vm-tiny": "tiny"}
    virdom = conn.lookupByUUIDString(KVM_FULL.uuid.lower())
    assert virdom.name() == "web-1"
    # libvirt's own accessor for our metadata element agrees with the model
    meta = virdom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "https://corral.dev/xmlns/vm/1")
    assert 'id="vm-01hzx3k7q2"' in meta


def test_read_modify_write_through_libvirt(conn: Any) -> None:
    virdom = start(conn, design_domain(QEMU_TINY).to_xml())
    virdom.destroy()

    dom = Domain.from_xml(virdom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    libvirt_added = [c.type for c in dom.devices.controllers]
    dom.memory_kib = dom.current_memory_kib = 256 * 1024
    dom.vcpu = 2
    data = Disk()
    data.type = "file"
    data.device = "disk"
    data.driver_name = "qemu"
    data.driver_type = "qcow2"
    data.source_file = "/var/lib/corral/pools/default/tiny-data.qcow2"
    data.target_dev = "vdb"
    data.target_bus = "virtio"
    dom.devices.add(data)
    virdom = start(conn, dom.to_xml())

    again = Domain.from_xml(virdom.XMLDesc(0))
    assert again.memory_kib == 256 * 1024
    assert again.vcpu == 2
    assert [d.target_dev for d in again.devices.disks] == ["vda", "vdb"]
    assert [c.type for c in again.devices.controllers] == libvirt_added
    assert again.vm_id == "vm-tiny"
    assert again.uuid == QEMU_TINY.uuid


def test_edited_xml_keeps_metadata_after_redefine(conn: Any) -> None:
    virdom = conn.defineXML(design_domain(KVM_FULL).to_xml())
    dom = Domain.from_xml(virdom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    dom.title = "renamed by corral"
    virdom = conn.defineXML(dom.to_xml())
    back = Domain.from_xml(virdom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert back.title == "renamed by corral"
    assert back.vm_id == KVM_FULL.vm_id


def test_each_test_gets_a_fresh_driver(conn: Any) -> None:
    # Domains of other tests are not visible: the connection is per-test.
    start(conn, design_domain(dataclasses.replace(QEMU_TINY, name="fresh")).to_xml())
    assert [d.name() for d in conn.listAllDomains()] == ["fresh"]
