"""The host's CPUs, NUMA nodes and huge pages, read from sysfs (what libvirt's capabilities
``<host><topology>`` show, without a libvirt call): the facts the engine places VMs by.

``root`` is ``/`` on a host; tests pass a made-up tree. A kernel without NUMA
(``/sys/devices/system/node`` absent) is one node 0 with every online CPU, MemTotal and the
global huge page pools (``/sys/kernel/mm/hugepages``).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from corral.agent_api.domains import HugePages, NumaNode
from corral.cpulist import parse_cpu_list

_POOL_RE = re.compile(r"^hugepages-(\d+)kB$")
_NODE_RE = re.compile(r"^node(\d+)$")
_MEM_RE = re.compile(r"MemTotal:\s+(\d+)\s*kB")
_PAGESIZE_RE = re.compile(r"^pagesize=(\d+)([KMG])$", re.IGNORECASE)
_KIB = {"K": 1, "M": 1024, "G": 1024 * 1024}


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _int(path: Path) -> int:
    text = _read(path)
    with contextlib.suppress(ValueError):
        return int((text or "").strip())
    return 0


def online_cpus(root: Path) -> list[int]:
    text = _read(root / "sys/devices/system/cpu/online")
    with contextlib.suppress(ValueError):
        if text is not None:
            return parse_cpu_list(text)
    return []


def _pools(directory: Path) -> list[HugePages]:
    """``hugepages-SIZEkB/{nr,free}_hugepages`` under ``directory``, smallest size first."""
    out: list[HugePages] = []
    with contextlib.suppress(OSError):
        for sub in directory.iterdir():
            m = _POOL_RE.match(sub.name)
            if m is not None:
                out.append(HugePages(size_kib=int(m.group(1)), total=_int(sub / "nr_hugepages"),
                                     free=_int(sub / "free_hugepages")))
    return sorted(out, key=lambda p: p.size_kib)


def _mem_total_kib(text: str | None) -> int:
    m = _MEM_RE.search(text or "")
    return int(m.group(1)) if m else 0


def numa_nodes(root: Path) -> list[NumaNode]:
    """The online NUMA nodes, by id; one pseudo node 0 where the kernel has no NUMA."""
    online = set(online_cpus(root))
    base = root / "sys/devices/system/node"
    nodes: list[NumaNode] = []
    with contextlib.suppress(OSError):
        for sub in base.iterdir():
            m = _NODE_RE.match(sub.name)
            if m is None:
                continue
            try:
                cpus = parse_cpu_list(_read(sub / "cpulist") or "")
            except ValueError:
                cpus = []
            nodes.append(NumaNode(
                id=int(m.group(1)), cpus=[c for c in cpus if c in online],
                memory_mib=_mem_total_kib(_read(sub / "meminfo")) // 1024,
                hugepages=_pools(sub / "hugepages")))
    if nodes:
        return sorted(nodes, key=lambda n: n.id)
    return [NumaNode(id=0, cpus=sorted(online),
                     memory_mib=_mem_total_kib(_read(root / "proc/meminfo")) // 1024,
                     hugepages=_pools(root / "sys/kernel/mm/hugepages"))]


def hugetlbfs_sizes(root: Path) -> list[int]:
    """Page sizes (KiB) that have a hugetlbfs mount (``/proc/mounts``): QEMU's huge pages
    live in files there, and libvirt finds the mounts when it starts."""
    default = 0
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("Hugepagesize:"):
            with contextlib.suppress(ValueError, IndexError):
                default = int(line.split()[1])
    sizes: set[int] = set()
    for line in (_read(root / "proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "hugetlbfs":
            continue
        size = default
        for option in fields[3].split(","):
            m = _PAGESIZE_RE.match(option)
            if m is not None:
                size = int(m.group(1)) * _KIB[m.group(2).upper()]
        if size:
            sizes.add(size)
    return sorted(sizes)
