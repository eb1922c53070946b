"""`python bench/snapshots.py`: linked clones against image size, full copies, and the pause
of a live memory snapshot. Writes its own section (``<!-- snapshots -->``) of
docs/benchmarks.md, leaving the others as they are.

Part 1, clones (the agent's own code, corral.agent.clones, on a storage dir under --root,
no lab host): three qcow2 images of 100 MiB, 1 GiB and 10 GiB virtual size, each with
written data (50 MiB, 512 MiB, 512 MiB: the rest is holes). For each, ``--runs`` times: a
VM disk (overlay on the image) is made untimed, then timed:

- ``linked_clone`` (``vm clone --linked``): freeze the source's disk into a base (rename),
  two ``qemu-img create`` overlays (source and clone);
- ``create_disk`` from the image (``vm create --template``/``--image``): one overlay;

and, ``--full-runs`` times, interleaved: ``full_clone`` (``vm clone --full``: ``qemu-img
convert -p`` with progress parsing) against a bare ``qemu-img convert -O qcow2`` of the same
disk. Target: linked clone time flat in the image size, p99 under 20 ms.

Part 2, live memory snapshot (lab host "snbench", index 91, with its own libvirtd; ``corral
up`` inside): a tiny 128 MiB guest is booted under TCG, then ``--snap-runs`` times,
interleaved: ``corral vm snapshot create --memory`` through the SDK (operation done) against
a bare ``virsh snapshot-create-as`` in the same libvirtd. The guest's pause is read from
libvirt lifecycle events (SUSPENDED → RESUMED) seen by this process. Needs root, qemu-img.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

import outcome
import sections
from benchnode import BenchNode, fresh_node
from corral.agent import clones
from corral.agent.storage import Storage
from corral.api import VmCreate
from corral.api.snapshots import SnapshotCreate
from corral.lab import LabHost
from guests import wait_booted
from timing import median, percentile, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
LAB_NAME, LAB_INDEX = "snbench", 91
MIB, GIB = 1 << 20, 1 << 30
SIZES = [("100 MiB", 100 * MIB, 50 * MIB), ("1 GiB", GIB, 512 * MIB),
         ("10 GiB sparse", 10 * GIB, 512 * MIB)]
P99_TARGET_S = 0.020


@dataclass
class Result:
    started: str = ""
    linked: dict[str, list[float]] = field(default_factory=dict)
    template: dict[str, list[float]] = field(default_factory=dict)
    full: dict[str, list[float]] = field(default_factory=dict)
    convert: dict[str, list[float]] = field(default_factory=dict)
    snap_corral: list[float] = field(default_factory=list)
    snap_virsh: list[float] = field(default_factory=list)
    pause_corral: list[float] = field(default_factory=list)
    pause_virsh: list[float] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def _qemu_io_write(path: Path, size: int) -> None:
    step = 64 * MIB
    for off in range(0, size, step):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        f"write -P 0x{(off // step) % 250 + 1:02x} {off} {min(step, size - off)}",
                        str(path)], check=True, capture_output=True, timeout=600)


def measure_clones(res: Result, root: Path, runs: int, full_runs: int) -> None:
    storage = Storage(root / "storage")
    for label, size, data in SIZES:
        img = f"img{size >> 20}"
        say(f"{label}: making the image ({data >> 20} MiB written)")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(storage.image_path(img)),
                        str(size)], check=True)
        _qemu_io_write(storage.image_path(img), data)
        linked, template = res.linked.setdefault(label, []), res.template.setdefault(label, [])
        for i in range(runs + 1):  # run 0: warm-up
            storage.create_disk("src", img, None)
            t0 = time.perf_counter()
            clones.linked_clone(storage, "src", "lc")
            t1 = time.perf_counter()
            storage.create_disk("tc", img, None)
            t2 = time.perf_counter()
            if i:
                linked.append(t1 - t0)
                template.append(t2 - t1)
            for vm in ("src", "lc", "tc"):
                storage.delete_disk(vm)
            clones.collect_bases(storage)
        storage.create_disk("src", img, None)
        full, conv = res.full.setdefault(label, []), res.convert.setdefault(label, [])
        out = root / "raw-copy.qcow2"
        for i in range(full_runs):
            for side in (("corral", "raw") if i % 2 == 0 else ("raw", "corral")):
                t0 = time.perf_counter()
                if side == "corral":
                    clones.full_clone(storage, "src", "fc", None, lambda _p, _m: None)
                else:
                    subprocess.run(["qemu-img", "convert", "-O", "qcow2",
                                    str(storage.disk_path("src")), str(out)], check=True)
                (full if side == "corral" else conv).append(time.perf_counter() - t0)
                storage.delete_disk("fc")
                out.unlink(missing_ok=True)
        say(f"{label}: linked p50 {median(linked) * 1000:.1f} ms, full p50 "
            f"{median(full):.2f} s, qemu-img convert p50 {median(conv):.2f} s")
        storage.delete_disk("src")
        storage.delete_image(img)


class PauseWatch:
    """SUSPENDED → RESUMED lifecycle events of one domain, timed in this process."""

    def __init__(self, uri: str, vm: str) -> None:
        libvirt.virEventRegisterDefaultImpl()
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()
        self.conn = libvirt.open(uri)
        self.dom = self.conn.lookupByName(vm)
        self.paused_at: float | None = None
        self.pauses: list[float] = []
        self.cb = self.conn.domainEventRegisterAny(
            self.dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            libvirt.virEventRunDefaultImpl()

    def _event(self, _conn: Any, _dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        now = time.perf_counter()
        if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
            self.paused_at = now
        elif event == libvirt.VIR_DOMAIN_EVENT_RESUMED and self.paused_at is not None:
            self.pauses.append(now - self.paused_at)
            self.paused_at = None

    def take(self, timeout: float = 10.0) -> float | None:
        deadline = time.monotonic() + timeout
        while self.paused_at is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pauses.pop() if self.pauses else None

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.domainEventDeregisterAny(self.cb)
            self.conn.close()
        self._stop.set()


def measure_snapshots(res: Result, root: Path, runs: int) -> None:
    host = LabHost(LAB_NAME, LAB_INDEX, root / "host")
    node: BenchNode | None = None
    try:
        node = fresh_node(host, root)
        say("corral up in the lab host, building the tiny image")
        node.up()
        vm = "snb"
        with node.client(timeout=120) as c:
            c.wait(c.build_tiny("tiny").id, timeout=900)
            c.wait(c.create_vm(VmCreate(name=vm, image="tiny", memory="128M", start=True)).id,
                   timeout=300)
            wait_booted(c, [vm], timeout=120, every=0.5)
            watch = PauseWatch(node.uri, vm)
            try:
                for i in range(runs + 1):  # run 0: warm-up
                    for side in (("corral", "virsh") if i % 2 == 0 else ("virsh", "corral")):
                        name = f"{side}-{i}"
                        t0 = time.perf_counter()
                        if side == "corral":
                            op = c.create_snapshot(vm, SnapshotCreate(name=name, memory=True))
                            done = c.wait(op.id, timeout=300)
                            if done.status.value != "success":
                                raise RuntimeError(f"snapshot failed: {done.error}")
                        else:
                            subprocess.run(["virsh", "-c", node.uri, "snapshot-create-as", vm,
                                            name], check=True, capture_output=True, timeout=300)
                        elapsed = time.perf_counter() - t0
                        pause = watch.take()
                        if i:
                            (res.snap_corral if side == "corral" else res.snap_virsh).append(
                                elapsed)
                            if pause is not None:
                                (res.pause_corral if side == "corral"
                                 else res.pause_virsh).append(pause)
                        subprocess.run(["virsh", "-c", node.uri, "snapshot-delete", vm, name],
                                       check=True, capture_output=True, timeout=300)
            finally:
                watch.close()
            c.wait(c.delete_vm(vm, force=True).id, timeout=300)
    finally:
        if node is not None:
            node.down()
        with contextlib.suppress(Exception):
            host.stop()


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{median(values) * 1000:.1f} / {percentile(values, 99) * 1000:.1f}"


def _s(values: list[float]) -> str:
    return f"{median(values):.2f}" if values else "-"


def section(res: Result, runs: int) -> str:
    lines = [
        "## Snapshots and clones (`bench/snapshots.py`)", "",
        f"Run {res.started}, {res.duration_s:.0f} s. Method: see the docstring of "
        "`bench/snapshots.py`.", "",
        f"### Clone creation against image size ({runs} runs each, p50 / p99 in ms)", "",
        "| image | linked clone of a VM | VM disk from a template | full clone (s, p50) "
        "| `qemu-img convert` (s, p50) | full / convert |",
        "|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for label, _size, _data in SIZES:
        lk = res.linked.get(label, [])
        if lk:
            worst = max(worst, percentile(lk, 99))
        full, conv = res.full.get(label, []), res.convert.get(label, [])
        ratio = f"{median(full) / median(conv):.2f}" if full and conv else "-"
        lines.append(f"| {label} | {_ms(lk)} | {_ms(res.template.get(label, []))} | "
                     f"{_s(full)} | {_s(conv)} | {ratio} |")
    flat = [median(res.linked[label]) for label, _s2, _d in SIZES if res.linked.get(label)]
    lines += ["",
              f"Linked clone p99, worst size: {worst * 1000:.1f} ms (target < "
              f"{P99_TARGET_S * 1000:.0f} ms: **{'met' if worst < P99_TARGET_S else 'missed'}**);"
              f" p50 from smallest to largest image: "
              f"{' → '.join(f'{x * 1000:.1f} ms' for x in flat)} (flat: it never reads data).",
              "",
              "### Live memory snapshot of a running 128 MiB tiny guest (TCG)", "",
              "| | corral (SDK, operation done) | `virsh snapshot-create-as` |",
              "|---|---|---|",
              f"| time, p50 (s) | {_s(res.snap_corral)} | {_s(res.snap_virsh)} |",
              f"| guest paused, p50 (s) | {_s(res.pause_corral)} | {_s(res.pause_virsh)} |",
              f"| samples | {len(res.snap_corral)} | {len(res.snap_virsh)} |", "",
              "Internal snapshots (the only kind libvirt 9 reverts) stop the guest for the "
              "whole save of its memory and disk state: the pause is the snapshot's length.",
              ""]
    lines += sections.closing_lines(res.errors, res.facts)
    return "\n".join(lines)


def missed(res: Result) -> list[str]:
    """The target missed, if it was: a linked clone's p99 under P99_TARGET_S at every size."""
    worst = max((percentile(res.linked[label], 99) for label, _s, _d in SIZES
                 if res.linked.get(label)), default=None)
    if worst is None or worst < P99_TARGET_S:
        return []
    return [f"linked clone p99 {worst * 1000:.1f} ms >= {P99_TARGET_S * 1000:.0f} ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--full-runs", type=int, default=3)
    parser.add_argument("--snap-runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/corral-bench-snapshots"))
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--skip-snapshots", action="store_true",
                        help="only part 1 (no lab host)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/snapshots.py needs root (lab host, libvirtd)", file=sys.stderr)
        return 2
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    measured = sections.Measured.now()
    res = Result(started=f"{measured.started:%Y-%m-%d %H:%M} UTC",
                 facts={"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                        "qemu-img": subprocess.run(["qemu-img", "--version"],
                                                   capture_output=True, text=True
                                                   ).stdout.splitlines()[0]})
    t0 = time.monotonic()
    try:
        measure_clones(res, root / "clones", args.runs, args.full_runs)
    except Exception as exc:
        res.errors.append(f"clones: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(root / "clones", ignore_errors=True)
    if not args.skip_snapshots:
        try:
            measure_snapshots(res, root, args.snap_runs)
        except Exception as exc:
            res.errors.append(f"snapshots: {type(exc).__name__}: {exc}")
    res.facts["load average at the end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    res.duration_s = time.monotonic() - t0
    text = section(res, args.runs)
    sections.write_section(args.report, "snapshots", text, measured)
    print(text)
    return outcome.finish("\n".join(res.errors) or None, missed(res))


if __name__ == "__main__":
    sys.exit(main())
