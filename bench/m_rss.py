"""Benchmark 3: resident memory of the engine and the agent, idle, with 20 running VMs.

VmRSS from /proc/PID/status (pids from DATA_DIR/engine.pid and agent.pid), read after every
guest has booted and ~10 s of quiet; several readings a second apart, the highest counts.
The lab host's libvirtd is read the same way, for scale (the raw tool's own daemon).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from benchnode import BenchNode
from corral.api import VmCreate
from guests import wait_booted
from m_createstart import CPUS, IMAGE, MEMORY
from timing import BenchError, say

SETTLE_S = 10.0
SAMPLES = 5


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise BenchError(f"no VmRSS for pid {pid}")


@dataclass
class RssResult:
    running_vms: int = 0
    samples_mib: dict[str, list[float]] = field(default_factory=dict)
    boot_all_s: float = 0.0

    def peak(self, which: str) -> float:
        return max(self.samples_mib.get(which) or [float("nan")])


def sample(node: BenchNode) -> dict[str, float]:
    return {
        "engine": rss_mib(node.pid("engine")),
        "agent": rss_mib(node.pid("agent")),
        "libvirtd": rss_mib(node.libvirtd_pid()),
    }


def run(node: BenchNode, conn: Any, target_vms: int, already: list[str]) -> RssResult:
    """Bring the running VMs to ``target_vms`` (``already`` run), settle, read RSS."""
    res = RssResult()
    names = list(already)
    t0 = time.monotonic()
    with node.client() as client:
        i = 0
        while len(names) < target_vms:
            i += 1
            name = f"br-{i:02d}"
            op = client.create_vm(VmCreate(name=name, image=IMAGE, memory=MEMORY, cpus=CPUS,
                                           start=True))
            client.wait(op.id, timeout=180)
            names.append(name)
            say(f"rss: {len(names)}/{target_vms} VMs started")
        wait_booted(client, names, timeout=600, every=2.0)  # names those that did not
        res.boot_all_s = time.monotonic() - t0
        running = [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                   if d.state()[0] == libvirt.VIR_DOMAIN_RUNNING]
        missing = set(names) - set(running)
        if missing:
            raise BenchError(f"not running per libvirt: {', '.join(sorted(missing))}")
        res.running_vms = len(set(names) & set(running))
    say(f"rss: {res.running_vms} VMs running and booted; settling {SETTLE_S:g} s")
    time.sleep(SETTLE_S)
    for _ in range(SAMPLES):
        for which, value in sample(node).items():
            res.samples_mib.setdefault(which, []).append(value)
        time.sleep(1.0)
    return res
