"""Create + start on the node users get, next to a lab host's, each against `virsh create`.

`make run` starts corral in this machine's own namespaces (`corral up` with the machine's
libvirtd, started by corral when none answers); the other benchmarks run inside lab hosts,
whose libvirtd has its own /dev/kvm node and can hide what a user's machine shows (it did:
11.5 s per define). This one measures both in one run, the same way (bench/m_createstart.py:
interleaved pairs of corral's create+start and `virsh create` of corral's own XML on the same
libvirtd), and reads whether libvirt rewrote its QEMU capability cache while it ran.

The machine's node gets its own data dir, port, bridge and subnet, so a node the user runs
beside it is untouched; it is purged at the end (`corral down --purge --force`), and a
libvirtd it started is stopped again. Its guests reach only their own bridge's gateway
(the tiny guest asks DHCP and nothing else). Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

import m_createstart
import outcome
import sections
from benchnode import BenchNode, fresh_node, seed_debs
from corral.client import Client
from corral.lab import LabHost
from corral.node.daemons import libvirt_works
from m_createstart import CreateStartResult
from timing import BenchError, median, ms, ratio_interval, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
SECTION = "node-createstart"
CORRAL = [sys.executable, "-m", "corral.cli.main"]
CAPS_DIR = Path("/var/cache/libvirt/qemu/capabilities")
# This machine's node: clear of `make run`'s defaults (8443, corral0, 10.210.0.0/24).
PORT, BRIDGE, SUBNET = 8743, "crlbench0", "10.213.0.0/24"
LAB_NAME, LAB_INDEX = "bnode", 42
TARGET = 1.2  # the machine's node within 1.2x of the lab host's corral figure


@dataclass
class MachineNode:
    """`corral up` in this machine's own namespaces, as `make run` starts it."""

    data_dir: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{PORT}"

    @property
    def uri(self) -> str:
        return "qemu:///system"

    @property
    def storage(self) -> Path:
        return self.data_dir / "agent" / "storage"

    def client(self, timeout: float = 60.0) -> Client:
        cfg = json.loads((self.data_dir / "client.json").read_text())
        return Client(self.url, cfg["token"], cfg["ca"], timeout=timeout)

    def cli(self, *args: str, timeout: float = 300) -> None:
        proc = subprocess.run([*CORRAL, *args, "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise BenchError(f"corral {' '.join(args)} failed ({proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}")

    def up(self) -> None:
        self.cli("up", "--detach", "--port", str(PORT), "--bridge", BRIDGE,
                 "--subnet", SUBNET, timeout=180)


def caps_mtimes() -> dict[str, float]:
    return {f.name: f.stat().st_mtime for f in CAPS_DIR.glob("*.xml")} if CAPS_DIR.is_dir() else {}


def measure(node: m_createstart.CreateNode, pairs: int, work: Path) -> CreateStartResult:
    with node.client() as client:
        say(f"{node.uri}: building the tiny image")
        client.wait(client.build_tiny("tiny").id, timeout=900)
    conn = libvirt.open(node.uri)
    try:
        return m_createstart.run(node, conn, pairs, work)
    finally:
        conn.close()


def delete_vms(node: m_createstart.CreateNode) -> None:
    with contextlib.suppress(Exception), node.client(timeout=30) as client:
        ops = [client.delete_vm(vm.name, force=True) for vm in client.list_vms()]
        for op in ops:
            client.wait_quiet(op.id, timeout=120)
    for name in m_createstart.leftover_twins(node.uri, "bv-") + \
            m_createstart.leftover_twins(node.uri, "bw-"):
        subprocess.run(["virsh", "-c", node.uri, "destroy", name], capture_output=True,
                       timeout=60, check=False)


def run_machine_node(root: Path, pairs: int, facts: dict[str, str]) -> CreateStartResult:
    node = MachineNode(root / "machine-node")
    started_libvirtd = not libvirt_works()
    facts["libvirtd of the machine"] = ("started by `corral up` (none answered)"
                                        if started_libvirtd else "already running: reused")
    seed_debs(root / "debs", node.storage / "build" / "cache" / "debs")
    try:
        t0 = time.monotonic()
        node.up()
        facts["`corral up --detach` on the machine"] = f"{time.monotonic() - t0:.1f} s"
        before = caps_mtimes()
        res = measure(node, pairs, root / "virsh-machine")
        after = caps_mtimes()
        rewritten = sorted(n for n, t in after.items() if before.get(n) != t)
        facts["QEMU capability cache files rewritten during the pairs"] = (
            f"{len(rewritten)} of {len(after)}")
        return res
    finally:
        delete_vms(node)
        with contextlib.suppress(Exception):
            node.cli("down", "--purge", "--force", timeout=120)
        if started_libvirtd:  # leave the machine as we found it
            subprocess.run(["pkill", "-x", "libvirtd"], check=False, timeout=10)


def run_lab_node(root: Path, pairs: int, facts: dict[str, str]) -> CreateStartResult:
    host = LabHost(LAB_NAME, LAB_INDEX, root / "host")
    node: BenchNode | None = None
    try:
        node = fresh_node(host, root)
        t0 = time.monotonic()
        node.up()
        facts["`corral up --detach` inside the lab host"] = f"{time.monotonic() - t0:.1f} s"
        return measure(node, pairs, root / "virsh-lab")
    finally:
        if node is not None:
            delete_vms(node)
            node.down()
        host.stop()


def _row(where: str, r: CreateStartResult) -> str:
    ratio = median(r.corral_s) / median(r.virsh_s)
    lo, hi = ratio_interval(r.corral_s, r.virsh_s)
    return (f"| {where} | {ms(median(r.corral_s))} | {ms(median(r.virsh_s))} | "
            f"{ratio:.2f} ({lo:.2f} to {hi:.2f}) |")


def report(pairs: int, machine: CreateStartResult, lab: CreateStartResult,
           facts: dict[str, str]) -> tuple[str, bool]:
    ratio = median(machine.corral_s) / median(lab.corral_s)
    lo, hi = ratio_interval(machine.corral_s, lab.corral_s)
    ok = ratio <= TARGET
    lines = [
        "## Create + start on the node `make run` starts, next to a lab host's",
        "",
        f"{pairs} interleaved pairs per node (`python bench/node_createstart.py`; method: "
        "bench/m_createstart.py). Medians; the "
        "interval is a 90% bootstrap interval of the ratio of medians.",
        "",
        "| node | corral create+start | `virsh create` (same libvirtd) | corral / virsh |",
        "|---|---|---|---|",
        _row("this machine's namespaces (`make run`)", machine),
        _row("lab host", lab),
        "",
        f"**This machine's node / lab host (corral's figures): {ratio:.2f}** "
        f"({lo:.2f} to {hi:.2f}); target ≤ {TARGET:.2f}: {'PASS' if ok else 'MISS'}.",
        "",
        *[f"- {k}: {v}" for k, v in facts.items()],
    ]
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--root", type=Path, default=Path("/tmp/corral-bench-node"))
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--report", type=Path, default=REPORT)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("this benchmark needs root (libvirtd, namespaces)", file=sys.stderr)
        return 2
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # QEMU (libvirt-qemu) opens the twins' disks below
    measured = sections.Measured.now()
    facts: dict[str, str] = {}
    try:
        machine = run_machine_node(root, args.pairs, facts)
        lab = run_lab_node(root, args.pairs, facts)
    except (BenchError, libvirt.libvirtError, subprocess.SubprocessError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"node create+start benchmark failed: {error}", file=sys.stderr)
        return outcome.finish(error)
    body, ok = report(args.pairs, machine, lab, facts)
    sections.write_section(args.report, SECTION, body, measured)
    print(body)
    return outcome.finish(None, [] if ok else [f"this machine's node / lab host > {TARGET}"])


if __name__ == "__main__":
    sys.exit(main())
