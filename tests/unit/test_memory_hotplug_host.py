"""The agent's side of memory hot-plug on libvirt's test driver: what a running domain
reports of its room (``<maxMemory>``, free DIMM slots), and the checks made before a DIMM
is plugged. The plug itself needs QEMU (the test driver attaches no devices): see
tests/integration/test_vm_settings_guest.py, where the tiny guest onlines the memory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_node import private_node_uri

from corral.agent.hypervisor import Hypervisor
from corral.domainxml import DiskSpec, DomainSpec, design_dimm, design_domain
from corral.errors import InvalidInput, WrongState


@pytest.fixture
def hv(tmp_path: Path) -> Iterator[Hypervisor]:
    yield Hypervisor(private_node_uri(tmp_path))


def _running(hv: Hypervisor, memory_max_mib: int | None) -> str:
    spec = DomainSpec(name="grow", uuid=str(uuid.uuid4()), vm_id="vm-grow", vcpus=1,
                      memory_mib=256, virt_type="qemu", disks=[DiskSpec("/srv/grow.qcow2")],
                      nics=[], vnc=False, memory_max_mib=memory_max_mib)
    info = hv.define(design_domain(spec).to_xml())
    hv.start(info.name)
    return info.name


def test_a_running_domain_reports_its_memory_hot_plug_room(hv: Hypervisor) -> None:
    name = _running(hv, 1024)
    got = hv.resources(name)
    assert (got["memory_mib"], got["memory_max_mib"], got["memory_slots_free"]) == (256, 1024, 16)


def test_a_domain_without_room_reports_none(hv: Hypervisor) -> None:
    got = hv.resources(_running(hv, None))
    assert (got["memory_max_mib"], got["memory_slots_free"]) == (None, 0)


def test_a_dimm_is_checked_before_it_is_plugged(hv: Hypervisor) -> None:
    name = _running(hv, 1024)
    dimm = design_dimm(128).to_xml()
    # it has 256 MiB already: a retried call plugs nothing
    assert hv.plug_memory(name, dimm, 256)["memory_mib"] == 256
    with pytest.raises(WrongState, match="does not make it 512 MiB"):
        hv.plug_memory(name, dimm, 512)  # 256 + 128 is not 512: it changed meanwhile
    nvdimm = dimm.replace('model="dimm"', 'model="nvdimm"')
    with pytest.raises(InvalidInput) as err:
        hv.plug_memory(name, nvdimm, 384)
    assert err.value.field == "xml"
    hv.destroy(name)
    with pytest.raises(WrongState, match="not running"):
        hv.plug_memory(name, dimm, 384)
