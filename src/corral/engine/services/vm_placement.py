"""Placement on the host: vCPU pinning, guest NUMA cells and huge pages, from a VM's
hardware settings and the facts its host's agent reports (``hosts.facts``: ``cpu_list``,
``numa_nodes`` with their CPUs, memory and huge pages, ``hugetlbfs``). Pure functions; the
designer turns what they resolve into XML.

The rules:

- pinning is one host CPU per vCPU, for the most vCPUs the VM can run (``cpu_max`` with
  hot-plug): vCPU i on the i-th CPU of the list (sorted). A list must name exactly that
  many CPUs, each online on the host; ``auto`` takes the highest-numbered CPUs of the
  first NUMA node that holds them all with one to spare (then: that holds them all; then
  spread over the nodes with the most CPUs first), leaving CPU 0 and the low ones to the
  host. No accounting across VMs: two VMs pinned to the same CPUs share them. QEMU's
  emulator threads go on the host's online CPUs the vCPUs do not use, or on all of them
  when the vCPUs use every one.
- ``numa``: N guest cells of consecutive vCPUs and an even share of the memory (designer);
  ``auto`` is one cell per host node that has memory, at most one per vCPU. Each cell's
  memory is bound strictly to a host node only where the host has at least as many nodes
  with memory as the guest has cells: cell i on the node that holds most of its pinned
  vCPUs, or on the i-th node. Otherwise the cells are the guest's topology only (a host
  with one node runs a two-cell guest unbound).
- ``hugepages``: the memory must be whole pages (per cell too); a start needs that many
  free pages of the size on the host (on each bound node for its cells' share) and a
  hugetlbfs mount of the size, else 409 insufficient_resources naming needed and free.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from corral.api import Hardware
from corral.cpulist import format_cpu_list, parse_cpu_list
from corral.domainxml.designer import split_evenly
from corral.errors import Conflict, InsufficientResources, InvalidInput

HUGEPAGE_KIB = {"2M": 2048, "1G": 1024 * 1024}
FACT_KEYS = ("cpu_list", "numa_nodes", "hugetlbfs")  # what hosts.refresh_placement reads anew


@dataclass(frozen=True)
class Placement:
    """The DomainSpec fields of a VM's placement on one host."""

    vcpu_pins: tuple[int, ...] = ()
    emulator_cpus: tuple[int, ...] = ()
    numa_cells: int = 0
    numa_nodes: tuple[int, ...] = ()
    hugepage_kib: int | None = None

    def spec_fields(self) -> dict[str, Any]:
        return {"vcpu_pins": self.vcpu_pins, "emulator_cpus": self.emulator_cpus,
                "numa_cells": self.numa_cells, "numa_nodes": self.numa_nodes,
                "hugepage_kib": self.hugepage_kib}


@dataclass(frozen=True)
class _Node:
    id: int
    cpus: tuple[int, ...]
    memory_mib: int
    hugepages: dict[int, tuple[int, int]]  # page size KiB -> (total, free)


def _nodes(facts: dict[str, Any]) -> list[_Node]:
    """The host's NUMA nodes; a host whose agent reports none is one node of all its CPUs."""
    raw = facts.get("numa_nodes")
    if not raw:
        return [_Node(0, tuple(online_cpus(facts)), int(facts.get("memory_mib") or 0), {})]
    return sorted((_Node(int(n["id"]), tuple(sorted(n.get("cpus") or [])),
                         int(n.get("memory_mib") or 0),
                         {int(p["size_kib"]): (int(p["total"]), int(p["free"]))
                          for p in n.get("hugepages") or []})
                   for n in raw), key=lambda n: n.id)


def online_cpus(facts: dict[str, Any]) -> list[int]:
    """The host's online CPUs (an older agent reports only a count: 0 to count - 1)."""
    listed = facts.get("cpu_list")
    if listed:
        return sorted(int(c) for c in listed)
    return list(range(int(facts.get("cpus") or 0)))


def most_vcpus(hw: Hardware, cpus: int) -> int:
    """The most vCPUs the VM can run: its hot-plug ceiling, or its vCPUs."""
    return hw.cpu_max if hw.cpu_max is not None else cpus


def check_settings(hw: Hardware, cpus: int, memory_mib: int) -> None:
    """What no host can change: 422 naming the field."""
    most = most_vcpus(hw, cpus)
    if hw.cpu_pin not in (None, "auto"):
        named = len(parse_cpu_list(hw.cpu_pin))
        if named != most:
            raise InvalidInput(f"cpu_pin {hw.cpu_pin} names {named} host CPUs for {most} vCPUs: "
                               "give one host CPU per vCPU (cpu_max of them with vCPU "
                               "hot-plug), or auto", field="hardware.cpu_pin")
    if isinstance(hw.numa, int) and hw.numa > most:
        raise InvalidInput(f"{hw.numa} NUMA cells need at least {hw.numa} vCPUs (the VM has "
                           f"{most})", field="hardware.numa")
    if hw.hugepages is not None:
        page = HUGEPAGE_KIB[hw.hugepages]
        if (memory_mib * 1024) % page:
            raise InvalidInput(f"memory {memory_mib} MiB is not a whole number of "
                               f"{hw.hugepages} huge pages", field="hardware.hugepages")
        if isinstance(hw.numa, int) and memory_mib * 1024 // page < hw.numa:
            raise InvalidInput(f"memory {memory_mib} MiB is fewer {hw.hugepages} huge pages "
                               f"than NUMA cells ({hw.numa})", field="hardware.hugepages")


def auto_pins(most: int, facts: dict[str, Any], host: str) -> list[int]:
    """Host CPUs for ``most`` vCPUs, one each (the rules in the module docstring)."""
    nodes = [n for n in _nodes(facts) if n.cpus]
    for room in (most + 1, most):
        for node in nodes:
            if len(node.cpus) >= room:
                return list(node.cpus[-most:])
    spread = [c for n in sorted(nodes, key=lambda n: (-len(n.cpus), n.id))
              for c in reversed(n.cpus)]
    if len(spread) < most:
        raise InsufficientResources(
            f"cpu_pin auto needs one host CPU per vCPU: {most} vCPUs, host {host} has "
            f"{len(spread)} CPUs online", field="hardware.cpu_pin")
    return sorted(spread[:most])


def _pins(hw: Hardware, most: int, facts: dict[str, Any],
          host: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if hw.cpu_pin is None:
        return (), ()
    online = online_cpus(facts)
    if hw.cpu_pin == "auto":
        chosen = auto_pins(most, facts, host)
    else:
        chosen = parse_cpu_list(hw.cpu_pin)
        missing = [c for c in chosen if c not in set(online)]
        if missing:
            raise Conflict(f"cpu_pin names host CPUs {format_cpu_list(missing)} that host "
                           f"{host} does not have online (it has "
                           f"{format_cpu_list(online) or 'none'})", field="hardware.cpu_pin")
        if len(chosen) != most:  # check_settings said so at the edge; a domain never gets it
            raise InvalidInput(f"cpu_pin names {len(chosen)} host CPUs for {most} vCPUs",
                               field="hardware.cpu_pin")
    rest = [c for c in online if c not in set(chosen)]
    return tuple(chosen), tuple(rest or online)


def _numa(hw: Hardware, most: int, facts: dict[str, Any],
          pins: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    if hw.numa is None:
        return 0, ()
    with_memory = [n for n in _nodes(facts) if n.memory_mib > 0] if facts.get("numa_nodes") \
        else []
    cells = min(max(len(with_memory), 1), most) if hw.numa == "auto" else hw.numa
    if len(with_memory) < cells:
        return cells, ()  # the guest's topology only: the host has fewer nodes to bind to
    node_of = {c: n.id for n in with_memory for c in n.cpus}
    bound: list[int] = []
    first = 0
    for i, count in enumerate(split_evenly(most, cells)):
        votes = Counter(node_of[c] for c in pins[first:first + count] if c in node_of)
        bound.append(votes.most_common(1)[0][0] if votes else with_memory[i].id)
        first += count
    return cells, tuple(bound)


def resolve(hw: Hardware, cpus: int, facts: dict[str, Any], host: str) -> Placement:
    """The placement of a VM with ``hw`` and ``cpus`` on the host of ``facts``; 409 when
    its CPUs cannot be pinned there."""
    most = most_vcpus(hw, cpus)
    pins, emulator = _pins(hw, most, facts, host)
    cells, nodes = _numa(hw, most, facts, pins)
    return Placement(vcpu_pins=pins, emulator_cpus=emulator, numa_cells=cells,
                     numa_nodes=nodes,
                     hugepage_kib=HUGEPAGE_KIB[hw.hugepages] if hw.hugepages else None)


def check_hugepages(hw: Hardware, cpus: int, memory_mib: int, facts: dict[str, Any],
                    host: str) -> None:
    """Before a start: enough free huge pages of the size (409 naming needed and free)."""
    if hw.hugepages is None:
        return
    size, name = HUGEPAGE_KIB[hw.hugepages], hw.hugepages
    if facts.get("numa_nodes") is None:
        raise InsufficientResources(f"host {host} does not report its huge pages (its agent "
                                    "is older than huge page support): upgrade it",
                                    field="hardware.hugepages")
    mounts = facts.get("hugetlbfs")
    if mounts is not None and size not in mounts:
        raise InsufficientResources(
            f"host {host} has no hugetlbfs mounted for {name} pages (QEMU takes huge pages "
            f"from one): mount -t hugetlbfs -o pagesize={name} hugetlbfs DIR, then restart "
            "libvirtd", field="hardware.hugepages")
    placement = resolve(hw, cpus, facts, host)
    pages = memory_mib * 1024 // size
    nodes = {n.id: n for n in _nodes(facts)}
    if placement.numa_nodes:  # bound cells take their pages from their own node
        need: Counter[int] = Counter()
        for node, share in zip(placement.numa_nodes,
                               split_evenly(pages, placement.numa_cells), strict=True):
            need[node] += share
        for node_id, count in sorted(need.items()):
            total, free = nodes[node_id].hugepages.get(size, (0, 0))
            if free < count:
                raise InsufficientResources(
                    f"the VM needs {count} free {name} huge pages on NUMA node {node_id} of "
                    f"host {host}, which has {free} free (of {total})",
                    field="hardware.hugepages")
        return
    total = sum(n.hugepages.get(size, (0, 0))[0] for n in nodes.values())
    free = sum(n.hugepages.get(size, (0, 0))[1] for n in nodes.values())
    if free < pages:
        raise InsufficientResources(
            f"the VM needs {pages} free {name} huge pages ({memory_mib} MiB); host {host} "
            f"has {free} free (of {total}): reserve more in /sys/kernel/mm/hugepages/"
            f"hugepages-{size}kB/nr_hugepages, or start it without hugepages",
            field="hardware.hugepages")
