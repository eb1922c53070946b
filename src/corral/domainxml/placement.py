"""Typed model of where a domain runs on its host: ``<cputune>`` (vCPU and emulator
pinning), ``<numatune>`` (memory bound to host NUMA nodes), ``<cpu><numa>`` (guest NUMA
cells) and ``<memoryBacking>`` (huge pages). No policy (that is the designer's)."""

from __future__ import annotations

from corral.domainxml.xmlnode import Child, Children, IntProperty, StrProperty, XMLNode


class VcpuPin(XMLNode):
    """``<cputune><vcpupin vcpu=N cpuset=LIST>``: the host CPUs vCPU ``N`` may run on."""

    TAG = "vcpupin"
    vcpu = IntProperty("@vcpu")
    cpuset = StrProperty("@cpuset")


class CPUTune(XMLNode):
    """``<cputune>``: vCPU pins, and the host CPUs of QEMU's emulator threads."""

    TAG = "cputune"
    CHILD_ORDER = (
        "shares", "period", "quota", "global_period", "global_quota", "emulator_period",
        "emulator_quota", "iothread_period", "iothread_quota", "vcpupin", "emulatorpin",
        "iothreadpin", "vcpusched", "emulatorsched", "iothreadsched", "cachetune",
        "memorytune",
    )  # fmt: skip

    vcpupins = Children(VcpuPin)
    emulatorpin_cpuset = StrProperty("emulatorpin/@cpuset")


class MemNode(XMLNode):
    """``<numatune><memnode cellid=N mode=... nodeset=...>``: guest cell N's memory on
    these host nodes."""

    TAG = "memnode"
    cellid = IntProperty("@cellid")
    mode = StrProperty("@mode")  # strict | preferred | interleave | restrictive
    nodeset = StrProperty("@nodeset")


class NumaTune(XMLNode):
    """``<numatune>``: the host NUMA nodes the domain's memory comes from."""

    TAG = "numatune"
    CHILD_ORDER = ("memory", "memnode")

    memory_mode = StrProperty("memory/@mode")
    memory_nodeset = StrProperty("memory/@nodeset")
    memnodes = Children(MemNode)


class NumaCell(XMLNode):
    """``<cpu><numa><cell id cpus memory unit>``: one guest NUMA node."""

    TAG = "cell"
    id = IntProperty("@id")
    cpus = StrProperty("@cpus")  # vCPU list, e.g. 0-1
    memory = IntProperty("@memory")  # in ``unit``
    unit = StrProperty("@unit")


class Numa(XMLNode):
    """``<cpu><numa>``: the guest's NUMA cells."""

    TAG = "numa"
    cells = Children(NumaCell)


class HugePage(XMLNode):
    """``<memoryBacking><hugepages><page size unit nodeset?>``."""

    TAG = "page"
    size = IntProperty("@size")  # in ``unit``
    unit = StrProperty("@unit")
    nodeset = StrProperty("@nodeset")  # guest cells; absent: all of them


class HugePages(XMLNode):
    """``<memoryBacking><hugepages>``: the page sizes backing the guest's memory."""

    TAG = "hugepages"
    pages = Children(HugePage)


class MemoryBacking(XMLNode):
    """``<memoryBacking>``: how QEMU allocates the guest's memory."""

    TAG = "memoryBacking"
    CHILD_ORDER = ("hugepages", "nosharepages", "locked", "source", "access", "allocation",
                   "discard")
    hugepages = Child(HugePages)
