"""`python bench/vm_settings.py`: how long a live `vm set` takes to reach the guest, vCPU
hot-plug and a balloon change, each against the raw tool (`virsh setvcpus --live`, `virsh
setmem --live`) measured in the same run the same way. Writes its own section
(``<!-- vm_settings -->``) of docs/benchmarks.md, leaving the others as they are.

Method: a lab host "vsbench" (index 85, its own libvirtd; ``corral up`` inside) builds the
tiny image and starts one guest (1 vCPU of at most 2, 256 MiB; TCG). Each measurement
starts a wait loop in the background of the guest's shell, typed on its serial console
(corral.lab.guest_console, through the engine's console WebSocket as `corral vm console`):
it reads the state every 5 ms with shell builtins and prints a SEEN marker on the console
once the change is there. The console is closed once the loop runs (before 593feb9 an open
console made each of corral's agent calls on the VM wait up to 2 s: its blocking stream read
shared the agent's libvirt connection; each console has its own now); then the clock starts
and the change is asked at once; it stops when SEEN is in the guest's console log file (virtlogd's, read every
5 ms). So both sides include the same way out of the guest, and corral's includes its whole
path: the PATCH, the operation, the redefinition of the domain, the agent's libvirt call.

- vCPU: from 1 to 2, until the guest's /sys/devices/system/cpu/online says ``0-1`` (the
  tiny guest onlines a plugged CPU as udev does); corral: ``PATCH /api/v1/vms/{name}``
  ``cpus=2`` (SDK ``update_vm``); raw: ``virsh setvcpus NAME 2 --live``. Between runs,
  untimed: ``cpus=1`` for the next start, a stop and a start through corral, and a wait for
  the guest's boot marker (not ``virsh setvcpus NAME 1 --live``: the guest releases the CPU,
  but libvirt's 5 s wait for that runs out under TCG and it keeps counting two vCPUs).
- balloon: from all 256 MiB to 192 MiB, until the guest's MemTotal (/proc/meminfo) has
  dropped by 63 MiB; corral: ``memory_target=192M``; raw: ``virsh setmem NAME 192M --live``.
  Between runs, untimed: ``virsh setmem NAME 256M --live`` and a wait until it is back.

One warm-up run per side, not counted; then ``--runs`` rounds, corral and virsh in turn,
the order alternating every round. No target: the ratio of medians is reported.
Needs root.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import outcome
import sections
from benchnode import BenchNode, fresh_node
from corral.api import Hardware, PowerAction, VmCreate, VmPatch
from corral.client import Client
from corral.domainxml import Domain
from corral.images.tiny import BOOT_MARKER
from corral.lab import LabHost
from corral.lab.guest_console import console_run
from guests import wait_booted
from timing import BenchError, median, percentile, ratio_interval, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
SECTION = "vm_settings"
LAB_NAME, LAB_INDEX = "vsbench", 85
VM = "vsb"
MEMORY_MIB, TARGET_MIB = 256, 192
WAIT_S = 60.0  # the most a change may take to show in the guest
BOOT_S = 180.0
POLL_US, POLLS = 5000, 12000  # the guest's loop: every 5 ms, at most 60 s

CPUS_ARE = '{{ read v </sys/devices/system/cpu/online; [ "$v" = {} ]; }}'
MEM_TOTAL_AT_MOST = ('{{ while read k v u; do [ "$k" = MemTotal: ] && break; done '
                     '</proc/meminfo; [ "$v" -le {} ]; }}')
MEM_TOTAL_AT_LEAST = MEM_TOTAL_AT_MOST.replace("-le", "-ge")


@dataclass
class Result:
    started: str = ""
    corral: dict[str, list[float]] = field(default_factory=dict)
    virsh: dict[str, list[float]] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def _in_guest(node: BenchNode, command: str) -> str:
    """Run ``command`` in the guest's shell through its console (corral.lab.guest_console:
    every step bounded); its output."""
    cfg = node.config()
    answer = console_run(node.url, cfg["token"], cfg["ca"], VM, command, timeout=WAIT_S)
    if answer.status != 0:
        raise BenchError(f"{command!r} in the guest: exit {answer.status}: {answer.output}")
    return answer.output


def mem_total_kib(node: BenchNode) -> int:
    """The guest's MemTotal (/proc/meminfo), in KiB."""
    return int(_in_guest(node, "grep MemTotal /proc/meminfo").split()[1])


def time_in_guest(node: BenchNode, log: Path, condition: str,
                  act: Callable[[], object]) -> float:
    """Seconds from ``act()`` until the guest's shell finds ``condition`` true: a loop that
    waits for it and then prints a SEEN line on the console is started in the background
    through the console, which is closed before ``act()`` (an open console holds the agent's
    libvirt connection and would slow corral's calls down); the SEEN line is read from the
    guest's console log file (virtlogd's), every 5 ms."""
    tag = uuid.uuid4().hex[:8]
    # The marker is split in the typed line, so only the loop's output has it whole.
    loop = (f"i=0; until {condition}; do usleep {POLL_US}; i=$((i+1)); "
            f"[ $i -ge {POLLS} ] && break; done; echo W{tag}''SEEN $i")
    # (not "( ..." first: console_run wraps it in $(...), and "$((" is arithmetic)
    _in_guest(node, f"true; ( {loop} ) </dev/null >/dev/console 2>&1 & echo started")
    offset = log.stat().st_size
    seen = re.compile(rf"W{tag}SEEN (\d+)".encode())
    t0 = time.perf_counter()
    act()
    deadline = time.monotonic() + 2 * WAIT_S
    while (m := seen.search(_tail(log, offset))) is None:
        if time.monotonic() > deadline:
            raise BenchError(f"the guest's console log did not show {condition!r} in time")
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    if int(m.group(1)) >= POLLS:
        raise BenchError(f"the guest did not see {condition!r} within {WAIT_S:g} s")
    return elapsed


def _tail(log: Path, offset: int) -> bytes:
    with log.open("rb") as f:
        f.seek(offset)
        return f.read()


def console_log_path(node: BenchNode) -> Path:
    """The guest's console log, as its domain's ``<serial><log file>`` names it."""
    proc = subprocess.run(["virsh", "-c", node.uri, "dumpxml", VM], capture_output=True,
                          text=True, timeout=60, check=True)
    found = [s.log_file for s in Domain.from_xml(proc.stdout).devices.serials if s.log_file]
    if not found:
        raise BenchError(f"the domain of {VM} has no console log file")
    return Path(found[0])


def _virsh(node: BenchNode, *args: str) -> None:
    proc = subprocess.run(["virsh", "-c", node.uri, *args], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        raise BenchError(f"virsh {' '.join(args)}: {proc.stderr.strip()}")


def _raw(node: BenchNode, args: tuple[str, ...]) -> Callable[[], object]:
    return lambda: _virsh(node, *args)


class Corral:
    """corral's side: the PATCH is what is timed; its operation is waited for afterwards."""

    def __init__(self, c: Client) -> None:
        self.c = c
        self.op: str | None = None

    def patch(self, req: VmPatch) -> Callable[[], object]:
        def act() -> None:
            self.op = self.c.update_vm(VM, req).id
        return act

    def settle(self) -> None:
        if self.op is not None:
            self.wait(self.op)
            self.op = None

    def wait(self, op: str) -> None:
        done = self.c.wait(op, timeout=300)
        if done.status.value != "success":
            raise BenchError(f"{done.type} failed: {done.error}")

    def restart_with_one_vcpu(self) -> None:
        """Back to one vCPU: at the next start (a stop and a start through corral), until the
        guest's shell is up again (see the module docstring: no live unplug)."""
        self.patch(VmPatch(cpus=1))()
        self.settle()
        boots = self.c.console_log(VM).count(BOOT_MARKER)
        self.wait(self.c.vm_action(VM, PowerAction.STOP, force=True).id)
        self.wait(self.c.vm_action(VM, PowerAction.START).id)
        deadline = time.monotonic() + BOOT_S
        while self.c.console_log(VM).count(BOOT_MARKER) <= boots:
            if time.monotonic() > deadline:
                raise BenchError(f"{VM} did not boot again within {BOOT_S:g} s")
            time.sleep(0.2)


def measure(res: Result, node: BenchNode, c: Client, runs: int) -> None:
    corral = Corral(c)
    log = console_log_path(node)
    full = mem_total_kib(node)
    res.facts["guest MemTotal at 256 MiB"] = f"{full // 1024} MiB"
    taken = full - (MEMORY_MIB - TARGET_MIB - 1) * 1024
    cases: list[tuple[str, str, VmPatch, tuple[str, ...], Callable[[], object]]] = [
        ("vCPU 1 → 2", CPUS_ARE.format("0-1"), VmPatch(cpus=2),
         ("setvcpus", VM, "2", "--live"), corral.restart_with_one_vcpu),
        (f"balloon {MEMORY_MIB} → {TARGET_MIB} MiB", MEM_TOTAL_AT_MOST.format(taken),
         VmPatch(memory_target=f"{TARGET_MIB}M"), ("setmem", VM, f"{TARGET_MIB}M", "--live"),
         lambda: time_in_guest(node, log, MEM_TOTAL_AT_LEAST.format(full - 1024),
                               _raw(node, ("setmem", VM, f"{MEMORY_MIB}M", "--live")))),
    ]
    for label, condition, req, virsh_args, reset in cases:
        mine, raw = res.corral.setdefault(label, []), res.virsh.setdefault(label, [])
        for i in range(runs + 1):  # run 0: warm-up
            for side in (("corral", "virsh") if i % 2 == 0 else ("virsh", "corral")):
                act = corral.patch(req) if side == "corral" else _raw(node, virsh_args)
                took = time_in_guest(node, log, condition, act)
                corral.settle()
                reset()
                if i:
                    (mine if side == "corral" else raw).append(took)
        say(f"{label}: corral p50 {median(mine) * 1000:.0f} ms, virsh p50 "
            f"{median(raw) * 1000:.0f} ms")


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{median(values) * 1000:.0f} / {percentile(values, 90) * 1000:.0f}"


def section(res: Result, runs: int) -> str:
    lines = [
        "## Live changes seen by the guest (`bench/vm_settings.py`)", "",
        f"Run {res.started}, {res.duration_s:.0f} s. Method: see the docstring of "
        "`bench/vm_settings.py`: from the request until the guest's own shell sees the "
        "change, read on its serial console; a tiny guest under TCG.", "",
        f"| change ({runs} runs each, p50 / p90 in ms) | corral (`PATCH /api/v1/vms`) | "
        "raw `virsh … --live` | corral / virsh (90% interval) |",
        "|---|---|---|---|",
    ]
    for label, mine in res.corral.items():
        raw = res.virsh.get(label, [])
        ratio = "-"
        if mine and raw:
            lo, hi = ratio_interval(mine, raw)
            ratio = f"{median(mine) / median(raw):.2f} ({lo:.2f}-{hi:.2f})"
        lines.append(f"| {label} | {_ms(mine)} | {_ms(raw)} | {ratio} |")
    lines += ["", "corral's path adds its operation (a row, a worker), the domain's "
              "redefinition (the next start keeps the change) and the agent's HTTPS call "
              "before libvirt's; the guest's part (ACPI hot-plug and onlining, the balloon "
              "driver giving pages back) is the same for both. The guest's console is closed "
              "while a change is timed (before 593feb9 an open console made each agent call "
              "on the VM wait up to 2 s; each console has a libvirt connection of its own "
              "now).",
              ""]
    lines += sections.closing_lines(res.errors, res.facts)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/corral-bench-vmset"))
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/vm_settings.py needs root (lab host, libvirtd)", file=sys.stderr)
        return 2
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    measured = sections.Measured.now()
    res = Result(started=f"{measured.started:%Y-%m-%d %H:%M} UTC",
                 facts={"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"})
    t0 = time.monotonic()
    host = LabHost(LAB_NAME, LAB_INDEX, root / "host")
    node: BenchNode | None = None
    try:
        host.stop()  # one an earlier run left, and its libvirt's domains: a clean host
        shutil.rmtree(root / "host", ignore_errors=True)
        node = fresh_node(host, root)
        say("corral up in the lab host, building the tiny image")
        node.up()
        with node.client(timeout=120) as c:
            c.wait(c.build_tiny("tiny").id, timeout=900)
            hw = Hardware(cpu_max=2, graphics="none")
            c.wait(c.create_vm(VmCreate(name=VM, image="tiny", cpus=1, memory=f"{MEMORY_MIB}M",
                                        start=True, hardware=hw)).id, timeout=300)
            wait_booted(c, [VM], timeout=180, every=0.5)
            measure(res, node, c, args.runs)
            c.wait(c.delete_vm(VM, force=True).id, timeout=300)
    except Exception as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        if node is not None:
            node.down()
        try:
            host.stop()
        except Exception as exc:
            res.errors.append(f"lab host stop: {type(exc).__name__}: {exc}")
        for left in ("node", "host"):
            shutil.rmtree(root / left, ignore_errors=True)
    res.facts["load average at the end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    res.duration_s = time.monotonic() - t0
    text = section(res, args.runs)
    sections.write_section(args.report, SECTION, text, measured)
    print(text)
    return outcome.finish("\n".join(res.errors) or None)


if __name__ == "__main__":
    sys.exit(main())
