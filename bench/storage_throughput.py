"""`python bench/storage_throughput.py`: sequential write throughput inside a guest, Ceph RBD
against qcow2 on a directory. Writes its own section (``<!-- storage_throughput -->``) of
docs/benchmarks.md, leaving the others as they are.

Method: a lab host "stbench" (index 93: a network + mount namespace with its own libvirtd;
``corral up`` inside) runs a real Ceph cluster (tests/integration/ceph_cluster.py: one mon,
one mgr, three OSDs on bluestore files, replication size 3, all on this one machine over the
lab host's address) and one tiny guest (128 MiB, TCG) with two extra disks of the same size:
a thin qcow2 volume of the ``default`` dir pool and a raw RBD volume of an rbd pool (QEMU's
librbd through a libvirt network disk). Inside the guest, ``--rounds`` times, in an order
reversed every round: ``dd if=/dev/zero of=/dev/vdX bs=1M count=N oflag=direct`` on each
disk, alone and with ``conv=fsync`` (busybox dd; O_DIRECT skips the guest's page cache,
fsync flushes the disk at the end), timed in the guest by busybox ``time``. The
MB/s (10^6 bytes/s) of a round is N MiB over that time; the report gives the median per
disk and the ratio rbd / dir. Round 0 (a warm-up that also allocates the qcow2 clusters and
the RBD objects for the first time) is reported apart. Needs root and the ceph packages
(scripts/install-deps.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import outcome
import sections
from benchnode import BenchNode, fresh_node
from corral.api import PowerAction, VmCreate
from corral.api.storage import PoolCreate, VolumeCreate
from corral.client import Client
from corral.lab import LabHost
from corral.lab.guest_console import console_run
from guests import wait_booted
from timing import median, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
LAB_NAME, LAB_INDEX = "stbench", 93
MIB = 1 << 20
VM = "stb"
KEYS = ("dir", "rbd", "dir+fsync", "rbd+fsync")


def _ceph_module() -> ModuleType:
    """tests/integration/ceph_cluster.py, the tests' own Ceph cluster, loaded by path (it is
    not part of the corral package)."""
    path = REPO / "tests" / "integration" / "ceph_cluster.py"
    spec = importlib.util.spec_from_file_location("ceph_cluster", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ceph_cluster"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Result:
    started: str = ""
    # "dir", "rbd": oflag=direct; "dir+fsync", "rbd+fsync": and conv=fsync (a flush at the end)
    mb_s: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KEYS})
    warmup: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def guest_sh(node: BenchNode, command: str, timeout: float = 300) -> str:
    """Run a shell command on the guest's serial console (a root shell); its output line."""
    cfg = node.config()
    return console_run(node.url, cfg["token"], cfg["ca"], VM, command, timeout).output


def dd_mb_s(node: BenchNode, dev: str, count: int, fsync: bool) -> float:
    """One round on /dev/DEV: busybox dd prints no timing, so busybox ``time -f %e`` (the
    guest's clock, 10 ms steps) times it; its line comes last."""
    out = guest_sh(node, f"busybox time -f %e dd if=/dev/zero of=/dev/{dev} bs=1M "
                            f"count={count} oflag=direct{' conv=fsync' if fsync else ''} 2>&1 | "
                            "tail -n 1")
    try:
        seconds = float(out.split()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"dd on /dev/{dev} printed {out!r}") from None
    if seconds <= 0:
        raise RuntimeError(f"dd on /dev/{dev} took {seconds} s")
    return count / seconds * MIB / 1e6  # MB/s (10^6 bytes), as dd and fio report


def _wait_ok(c: Client, op_id: str, what: str, timeout: float = 600) -> None:
    done = c.wait(op_id, timeout=timeout)
    if done.status.value != "success":
        raise RuntimeError(f"{what} failed: {done.error}")


def measure(res: Result, root: Path, rounds: int, count: int) -> None:
    ceph_mod = _ceph_module()
    host = LabHost(LAB_NAME, LAB_INDEX, root / "host")
    node: BenchNode | None = None
    ceph: Any = None
    try:
        node = fresh_node(host, root)
        say("corral up in the lab host")
        node.up()
        say("starting Ceph (1 mon, 1 mgr, 3 OSDs, size 3) in the lab host")
        shutil.rmtree(root / "ceph", ignore_errors=True)
        (root / "ceph").mkdir(parents=True)
        ceph = ceph_mod.CephCluster(root / "ceph", host)
        ceph.start()
        ceph.create_pool("bench")
        res.facts["ceph"] = (f"{ceph.cli_json('osd', 'stat')['num_up_osds']} OSDs up, pool size "
                             f"{ceph.cli_json('osd', 'pool', 'get', 'bench', 'size')['size']}, "
                             "bluestore on sparse files, one machine over the lab host's "
                             f"address ({ceph.address})")
        size = f"{count + 16}M"
        with node.client(timeout=120) as c:
            _wait_ok(c, c.build_tiny("tiny").id, "build-tiny", 900)
            _wait_ok(c, c.create_pool(PoolCreate(name="ceph", type="rbd", ceph_conf=str(ceph.conf),
                                                 ceph_pool="bench")).id, "rbd pool")
            _wait_ok(c, c.create_volume("default", VolumeCreate(name="bdir", size=size)).id,
                     "dir volume")
            _wait_ok(c, c.create_volume("ceph", VolumeCreate(name="brbd", size=size)).id,
                     "rbd volume")
            _wait_ok(c, c.create_vm(VmCreate(name=VM, image="tiny", memory="128M")).id,
                     "vm create")
            for ref in ("default/bdir", "ceph/brbd"):
                _wait_ok(c, c.attach_disk(VM, ref).id, f"attach {ref}")
            _wait_ok(c, c.vm_action(VM, PowerAction.START).id, "vm start")
            wait_booted(c, [VM], timeout=180, every=0.5)
            devs = {"dir": "vdb", "rbd": "vdc"}
            for kind, dev in devs.items():  # the attach order gave these names; check it
                got = guest_sh(node, f"cat /sys/block/{dev}/size")
                if int(got) * 512 != (count + 16) * MIB:
                    raise RuntimeError(f"/dev/{dev} ({kind}) has {got} sectors")
            for i in range(rounds + 1):
                order = KEYS if i % 2 == 0 else tuple(reversed(KEYS))
                seen = {}
                for key in order:
                    kind, _, sync = key.partition("+")
                    seen[key] = dd_mb_s(node, devs[kind], count, fsync=bool(sync))
                    if i == 0:
                        res.warmup[key] = seen[key]
                    else:
                        res.mb_s[key].append(seen[key])
                say(f"round {i}: " + ", ".join(f"{k} {v:.1f} MB/s" for k, v in seen.items()))
            _wait_ok(c, c.delete_vm(VM, force=True).id, "vm delete")
    finally:
        if node is not None:
            node.down()
        if ceph is not None:
            with contextlib.suppress(Exception):
                ceph.stop()
        with contextlib.suppress(Exception):
            host.stop()


def section(res: Result, rounds: int, count: int) -> str:
    def ratio(sync: str) -> str:
        d, r = res.mb_s["dir" + sync], res.mb_s["rbd" + sync]
        return f"{median(r) / median(d):.2f}" if d and r else "-"

    lines = [
        "## Storage throughput: Ceph RBD against qcow2 on a directory "
        "(`bench/storage_throughput.py`)", "",
        f"Run {res.started}, {res.duration_s:.0f} s. Method: see the docstring of "
        f"`bench/storage_throughput.py`: `dd if=/dev/zero of=/dev/vdX bs=1M count={count} "
        f"oflag=direct [conv=fsync]` in a 128 MiB tiny guest under TCG, {rounds} rounds after "
        "a warm-up.",
        "",
        "| disk | median MB/s | all rounds (MB/s) | warm-up round (MB/s) |",
        "|---|---|---|---|",
    ]
    labels = {"dir": "qcow2 volume, dir pool", "rbd": "raw RBD volume, rbd pool (3 replicas)"}
    for key in KEYS:
        kind, _, sync = key.partition("+")
        label = labels[kind] + (", `conv=fsync`" if sync else "")
        vals = res.mb_s[key]
        lines.append(f"| {label} | {median(vals):.1f} | "
                     f"{', '.join(f'{v:.1f}' for v in vals)} | "
                     f"{res.warmup.get(key, 0):.1f} |" if vals else f"| {label} | - | - | - |")
    lines += ["", f"**rbd / dir = {ratio('')}** with `oflag=direct` alone, "
              f"**{ratio('+fsync')}** with `conv=fsync` too (median over median).", "",
              "Both disks use QEMU's default cache mode (writeback): `oflag=direct` bypasses "
              "only the guest's page cache, so the dir disk's writes land in the host's page "
              "cache (`conv=fsync` then waits for the host's disk). librbd starts in "
              "writethrough mode (each write acknowledged by the three OSDs) and switches to "
              "its writeback cache at the guest's first flush "
              "(`rbd_cache_writethrough_until_flush`): the warm-up round, which also writes "
              "every RBD object for the first time, shows the writethrough figure; the "
              "measured rounds run with the cache, as a guest whose file system flushes does.",
              "",
              "This is one machine with 2 CPUs: the three OSDs (bluestore on sparse files of "
              "one file system), the monitor and QEMU share them, every replica travels over "
              "loopback (the lab host's address), and the guest runs under TCG. On a real "
              "cluster replicas cross a network to OSDs with their own disks and CPUs, so "
              "neither the figures nor the ratio carry over as they are; what does is the "
              "shape: a replicated RBD write costs several times a local qcow2 write.", ""]
    lines += sections.closing_lines(res.errors, res.facts)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=256, help="MiB written per round")
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/corral-bench-storage"))
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/storage_throughput.py needs root (lab host, libvirtd, Ceph)",
              file=sys.stderr)
        return 2
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    measured = sections.Measured.now()
    res = Result(started=f"{measured.started:%Y-%m-%d %H:%M} UTC",
                 facts={"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"})
    t0 = time.monotonic()
    try:
        measure(res, root, args.rounds, args.count)
    except Exception as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
    res.facts["load average at the end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    res.duration_s = time.monotonic() - t0
    text = section(res, args.rounds, args.count)
    sections.write_section(args.report, "storage_throughput", text, measured)
    print(text)
    print(json.dumps(res.mb_s))
    return outcome.finish("\n".join(res.errors) or None)  # no target: for information


if __name__ == "__main__":
    sys.exit(main())
