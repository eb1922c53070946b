"""`make bench`: corral against the raw tools, on a corral node of its own; writes docs/benchmarks.md.

Starts a lab host ("bench", index 41: a network + mount namespace with its own libvirtd, see
corral.lab), runs `corral up` inside it, builds the tiny image, then measures:

1. create + start through the API until libvirt reports the domain running, against
   `virsh create` of the same domain XML, interleaved (bench/m_createstart.py);
2. how fast a request is acknowledged with 202 (bench/m_ack.py);
3. the engine's and the agent's RSS, idle with 20 running VMs (bench/m_rss.py).

Traffic goes only to loopback and the lab host's address; every wait is bounded; VMs, the
node and the lab host are removed at the end, whatever happened. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import libvirt

import corral
import m_ack
import m_createstart
import m_rss
import outcome
import sections
from benchnode import BenchNode, seed_debs, start_lab_host
from report import Run, markdown, summary, verdicts
from timing import say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def _version(v: int) -> str:
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"


def machine_facts() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), "?")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    os_name = "?"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPUs": f"{os.cpu_count()} ({model})",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "OS": f"{os_name}, kernel {platform.release()}",
        "load average (1/5/15 min) at start": load,
    }


def software_facts(conn: Any) -> dict[str, str]:
    return {
        "libvirt (the lab host's libvirtd)": _version(conn.getLibVersion()),
        "QEMU (as libvirt reports it)": _version(conn.getVersion()),
        "virsh": _first_line(["virsh", "--version"]),
        "qemu-img": _first_line(["qemu-img", "--version"]),
        "libvirt-python": _version(libvirt.getVersion()),
        "Python": platform.python_version(),
        "corral": corral.__version__,
    }


def cleanup(node: BenchNode | None, conn: Any) -> None:
    """Delete every VM (bounded), destroy leftover virsh twins, stop the node and the lab host."""
    if node is not None:
        with contextlib.suppress(Exception):
            if node.data_dir.joinpath("client.json").exists():
                with node.client(timeout=30) as client:
                    deadline = time.monotonic() + 180
                    ops = [client.delete_vm(vm.name, force=True) for vm in client.list_vms()]
                    say(f"cleanup: deleting {len(ops)} VMs")
                    for op in ops:
                        client.wait_quiet(op.id, timeout=max(1.0, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            for name in m_createstart.leftover_twins(node.uri, "bv-") + \
                    m_createstart.leftover_twins(node.uri, "bw-"):
                subprocess.run(["virsh", "-c", node.uri, "destroy", name], capture_output=True,
                               timeout=60, check=False)
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
    if node is not None:
        say("cleanup: corral down, stopping the lab host")
        node.down()
        node.host.stop()


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)  # unwinds through the finally blocks: cleanup still runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--root", type=Path, default=Path("/tmp/corral-bench"),
                   help="work directory (lab host, node data dir, virsh twins' disks)")
    p.add_argument("--pairs", type=int, default=20, help="create+start pairs (corral + virsh)")
    p.add_argument("--requests", type=int, default=100, help="timed requests for the ack latency")
    p.add_argument("--running", type=int, default=20, help="running VMs for the RSS reading")
    p.add_argument("--report", type=Path, default=REPORT, help="where the markdown report goes")
    p.add_argument("--retry-for", type=float, default=20 * 60,
                   help="keep retrying a lab host that fails to start for this many seconds")
    p.add_argument("--retry-wait", type=float, default=120, help="seconds between those tries")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.requests < 2 or args.running < 1:
        p.error("--pairs, --running must be >= 1 and --requests >= 2")
    if args.running > 22:
        p.error("--running is capped at 22 (2 CPUs, 24 GiB)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("make bench needs root (network and mount namespaces, libvirtd)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    measured = sections.Measured.now()
    run = Run(started=f"{measured.started:%Y-%m-%d %H:%M} UTC", facts=machine_facts())
    t_start = time.monotonic()
    node: BenchNode | None = None
    conn: Any = None
    try:
        host = start_lab_host(root / "host", run.notes, args.retry_for, args.retry_wait)
        node = BenchNode(root, host, run.notes)
        shutil.rmtree(node.data_dir, ignore_errors=True)  # a fresh node: new DB, no VMs
        shutil.rmtree(root / "virsh", ignore_errors=True)
        source = seed_debs(root / "debs", node.storage / "build" / "cache" / "debs")
        run.setup["lab host"] = f"{host.name}, index {host.index}, address {host.address}"
        run.setup["tiny image packages from"] = source

        t0 = time.monotonic()
        node.up()
        run.setup["`corral up --detach` inside the lab host"] = f"{time.monotonic() - t0:.1f} s"
        conn = libvirt.open(node.uri)
        run.facts.update(software_facts(conn))
        with node.client() as client:
            st = client.status()
            h = st.hosts[0] if st.hosts else None
            virt = "?" if h is None else (h.virt_type or "?").replace("qemu", "TCG (qemu)")
            run.facts["virtualization (corral status)"] = virt + (f": {h.virt_note}" if h and
                                                                 h.virt_note else "")
            run.rss_before_mib["after `corral up`, no image, no VM"] = m_rss.sample(node)
            say("building the tiny image")
            t0 = time.monotonic()
            client.wait(client.build_tiny("tiny").id, timeout=900)
            run.setup["tiny image build (SDK build_tiny)"] = f"{time.monotonic() - t0:.1f} s"
        run.rss_before_mib["after the tiny image build, no VM"] = m_rss.sample(node)
        say(f"node up, virtualization {virt}; measuring")

        run.create = m_createstart.run(node, conn, args.pairs, root / "virsh")
        run.ack = m_ack.run(node, conn, args.requests)
        run.rss_before_mib["1 running VM, after the ack-latency run"] = m_rss.sample(node)
        run.rss = m_rss.run(node, conn, args.running, [m_ack.VM])
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        say(f"benchmark failed: {run.error}")
    finally:
        cleanup(node, conn)
        run.facts["load average (1/5/15 min) at the end"] = " / ".join(
            f"{x:.2f}" for x in os.getloadavg())
        run.duration_s = time.monotonic() - t_start
    target: Path = args.report
    if run.error:
        target = root / "benchmarks-partial.md"  # keep the last complete report
    sections.write_section(target, "node", markdown(run), measured)
    print(summary(run))
    print(f"report: {target}")
    return outcome.finish(run.error, [v.what for v in verdicts(run) if v.ok is False])


if __name__ == "__main__":
    sys.exit(main())
