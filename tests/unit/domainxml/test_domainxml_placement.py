"""Placement in the designed XML: vCPU and emulator pinning, guest NUMA cells bound to host
nodes, huge pages (the expected file is designed_placed.xml; the rules: designer.py)."""

from __future__ import annotations

import dataclasses

import pytest
from domainxml_specs import PLACED, QEMU_TINY

from corral.domainxml import Domain, design_domain
from corral.domainxml.designer import split_evenly
from corral.domainxml.placement import HugePage, MemNode, NumaCell, VcpuPin
from corral.errors import InvalidInput


def _cells(dom: Domain) -> list[tuple[int | None, str | None, int | None, str | None]]:
    return [(c.id, c.cpus, c.memory, c.unit) for c in dom.cpu.numa.cells]


def test_pins_emulator_cells_nodes_and_pages_read_back() -> None:
    dom = Domain.from_xml(design_domain(PLACED).to_xml())
    assert [(p.vcpu, p.cpuset) for p in dom.cputune.vcpupins] == [(0, "4"), (1, "5"), (2, "12")]
    assert dom.cputune.emulatorpin_cpuset == "0-3,6-11,13-15"
    # 3 vCPUs, 515 pages of 2 MiB: the first cell takes the extra vCPU and page
    assert _cells(dom) == [(0, "0,1", 258 * 2048, "KiB"), (1, "2", 257 * 2048, "KiB")]
    assert (dom.numatune.memory_mode, dom.numatune.memory_nodeset) == ("strict", "0,1")
    assert [(m.cellid, m.mode, m.nodeset) for m in dom.numatune.memnodes] == \
        [(0, "strict", "0"), (1, "strict", "1")]
    pages = dom.memory_backing.hugepages.pages
    assert [(p.size, p.unit, p.nodeset) for p in pages] == [(2048, "KiB", None)]
    assert sum(c.memory or 0 for c in dom.cpu.numa.cells) == dom.memory_kib  # libvirt's rule


def test_nothing_placed_by_default() -> None:
    dom = design_domain(QEMU_TINY)
    for part in (dom.cputune, dom.numatune, dom.memory_backing, dom.cpu):
        assert not part.exists


def test_cells_without_host_binding_under_tcg() -> None:
    """A two-cell guest on a one-node host: cells only (no <numatune>), and under TCG a
    <cpu> that holds just them."""
    dom = design_domain(dataclasses.replace(QEMU_TINY, vcpus=2, memory_mib=256, numa_cells=2))
    assert _cells(dom) == [(0, "0", 128 * 1024, "KiB"), (1, "1", 128 * 1024, "KiB")]
    assert not dom.numatune.exists and dom.cpu.mode is None


def test_cells_cover_hot_pluggable_vcpus() -> None:
    dom = design_domain(dataclasses.replace(QEMU_TINY, vcpus=1, max_vcpus=4, numa_cells=2))
    assert [c.cpus for c in dom.cpu.numa.cells] == ["0,1", "2,3"]


def test_pins_without_emulator_cpus_and_a_page_for_some_cells() -> None:
    """What the model can say beyond the designer's policy reads back (page nodeset)."""
    dom = design_domain(dataclasses.replace(QEMU_TINY, vcpu_pins=(1,)))
    assert dom.cputune.emulatorpin_cpuset is None
    page = HugePage()
    page.size, page.unit, page.nodeset = 1, "GiB", "0"
    dom.memory_backing.hugepages.add(page)
    assert "<page size=\"1\" unit=\"GiB\" nodeset=\"0\"/>" in dom.to_xml()


def test_model_elements_stand_alone() -> None:
    pin, memnode, cell = VcpuPin(), MemNode(), NumaCell()
    pin.vcpu, pin.cpuset = 3, "0-1"
    memnode.cellid, memnode.mode, memnode.nodeset = 1, "preferred", "2"
    cell.id, cell.cpus, cell.memory, cell.unit = 0, "0-3", 1024, "MiB"
    assert pin.to_xml() == '<vcpupin vcpu="3" cpuset="0-1"/>\n'
    assert memnode.to_xml() == '<memnode cellid="1" mode="preferred" nodeset="2"/>\n'
    assert cell.to_xml() == '<cell id="0" cpus="0-3" memory="1024" unit="MiB"/>\n'


@pytest.mark.parametrize(("total", "parts", "split"), [
    (4, 2, [2, 2]), (3, 2, [2, 1]), (7, 3, [3, 2, 2]), (1, 1, [1]),
])
def test_split_evenly(total: int, parts: int, split: list[int]) -> None:
    assert split_evenly(total, parts) == split


@pytest.mark.parametrize(("changes", "field"), [
    ({"vcpu_pins": (0, 1)}, "vcpu_pins"),  # two pins for one vCPU
    ({"vcpu_pins": (-1,)}, "vcpu_pins"),
    ({"emulator_cpus": (9000,)}, "emulator_cpus"),
    ({"numa_cells": 2}, "numa_cells"),  # one vCPU
    ({"numa_cells": -1}, "numa_cells"),
    ({"vcpus": 2, "numa_cells": 2, "numa_nodes": (0,)}, "numa_nodes"),
    ({"vcpus": 2, "numa_cells": 2, "numa_nodes": (0, 5000)}, "numa_nodes"),
    ({"hugepage_kib": 4096}, "hugepage_kib"),
    ({"hugepage_kib": 1024 * 1024}, "memory_mib"),  # 128 MiB is no whole 1G page
    ({"memory_mib": 131, "hugepage_kib": 2048, "vcpus": 2, "numa_cells": 2}, "memory_mib"),
    ({"memory_mib": 2048, "hugepage_kib": 1024 * 1024, "vcpus": 3, "numa_cells": 3},
     "numa_cells"),  # two pages for three cells
])
def test_invalid_placement(changes: dict[str, object], field: str) -> None:
    spec = dataclasses.replace(QEMU_TINY, **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as info:
        design_domain(spec)
    assert (info.value.field, info.value.status) == (field, 422)
