"""`python bench/cluster_rss.py`: resident memory of the engine and of each agent on the 3-host
lab (bench/benchlab.py) with 10 VMs on each host. Writes its own section
(``<!-- cluster_rss -->``) of docs/benchmarks.md. Needs root (the lab).

Method: `corral lab up --hosts 3 --cpu-overcommit 8` (every lab host shows this machine's
CPUs, 2 here: 10 VMs of 1 vCPU need more than the default 4 vCPUs per CPU), with the tiny
image and network `default` it makes. VmRSS of the engine and of each agent
(/proc/PID/status: the process itself; its children, QEMU and libvirtd are not counted) is
read once the lab is up (no VM: for context); then 10 VMs of 128M are pinned on each host
(``vm create --host H --start``), every guest booted (its console shows the tiny guest's
boot line) and its QEMU running (the lab host's libvirt pid file), ~10 s of quiet, and 5
readings a second apart: the highest counts. The agents read so far are the processes that
joined (`corral.agent join`, serving on after its join, as `lab up` starts them); then each
is restarted (`lab fault H kill-agent`; its guard starts `corral.agent run`, as a host's agent
runs after any restart; the QEMUs keep running) and read again the same way.
``--stopped`` defines the 30 VMs without starting them (nothing boots; the report says
so). Targets as for one node: engine
< 150 MB, agent < 80 MB (MB = 10^6 bytes). Each lab host's libvirtd is read too, for scale
(the raw tool's own daemon).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import sections
from benchlab import (
    IMAGE,
    agent_pids,
    check_guests,
    engine_pid,
    host_names,
    lab_host,
    mb,
    rss_mib,
)
from benchmain import InLab, LabSpec, in_lab, run_bench
from corral.api import PowerAction, VmCreate
from corral.client import Client
from corral.images.tiny import BOOT_MARKER
from corral.lab import _procs
from corral.lab.cluster import Lab
from guests import not_booted
from timing import BenchError, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
SECTION = "cluster_rss"
PREFIX = "br"
VMS_PER_HOST = 10
MEMORY = "128M"
SETTLE_S = 10.0
SAMPLES = 5
BOOT_TIMEOUT_S = 900.0
PANIC = "Kernel panic"
RESTARTS = 2
RESTARTED = ", restarted (`run`)"
ENGINE_TARGET_MB = 150.0
AGENT_TARGET_MB = 80.0
# Each lab host shows this machine's 2 CPUs: 10 VMs of 1 vCPU need more than the default 4.
CPU_OVERCOMMIT = 8.0


@dataclass
class Result:
    started_vms: bool
    vms: dict[str, list[str]] = field(default_factory=dict)  # host -> VM names
    running: dict[str, int] = field(default_factory=dict)  # host -> QEMUs running
    restarted: dict[str, int] = field(default_factory=dict)  # VM -> restarts after a panic
    idle_mib: dict[str, float] = field(default_factory=dict)  # with no VM, for context
    samples_mib: dict[str, list[float]] = field(default_factory=dict)
    create_s: float = 0.0
    boot_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)

    def peak(self, which: str) -> float:
        return max(self.samples_mib.get(which) or [float("nan")])


def sample(lab: Lab) -> dict[str, float]:
    """engine, agent HOST and libvirtd HOST: VmRSS in MiB."""
    out = {"engine": rss_mib(engine_pid(lab))}
    for host, pid in sorted(agent_pids(lab).items()):
        out[f"agent {host}"] = rss_mib(pid)
    for host in host_names(lab):
        daemon = lab_host(lab, host).daemon_pid("libvirtd")
        if daemon is not None:
            out[f"libvirtd {host}"] = rss_mib(daemon)
    return out


def qemus_running(lab: Lab, host: str, names: list[str]) -> int:
    """How many of ``names`` have a live QEMU on lab host ``host`` (libvirt's pid files)."""
    run_dir = Path(lab.state().hosts[host].root_dir) / "run" / "libvirt" / "qemu"
    alive = 0
    for name in names:
        try:
            pid = int((run_dir / f"{name}.pid").read_text())
        except (OSError, ValueError):
            continue
        if _procs.is_alive(pid):
            alive += 1
    return alive


def boot_all(client: Client, names: list[str], restarted: dict[str, int]) -> float:
    """Seconds until every console shows the tiny guest's boot line. A guest whose kernel
    panicked at boot (under TCG on a loaded machine the kernel's IO-APIC timer check can
    fail) is stopped and started again, at most RESTARTS times; ``restarted`` counts them.
    Bounded by BOOT_TIMEOUT_S (guests.not_booted names those that did not boot)."""
    t0 = time.monotonic()
    pending = set(names)
    seen_from: dict[str, int] = {}  # console offset of the current boot
    while pending:
        for name in sorted(pending):
            log = client.console_log(name)
            if BOOT_MARKER in log[seen_from.get(name, 0):]:
                pending.discard(name)
            elif PANIC in log[seen_from.get(name, 0):] and restarted.get(name, 0) < RESTARTS:
                say(f"rss: {name} panicked at boot; stopping and starting it again")
                client.wait(client.vm_action(name, PowerAction.STOP, force=True).id, timeout=120)
                seen_from[name] = len(client.console_log(name))
                client.wait(client.vm_action(name, PowerAction.START).id, timeout=120)
                restarted[name] = restarted.get(name, 0) + 1
        if not pending:
            break
        if time.monotonic() - t0 > BOOT_TIMEOUT_S:
            raise not_booted(f"{len(names)} guests to boot", BOOT_TIMEOUT_S, pending,
                             len(names), client.console_log)
        time.sleep(3.0)
    return time.monotonic() - t0


def measure(res: Result, lab: Lab, client: Client) -> None:
    res.idle_mib = sample(lab)
    t0 = time.monotonic()
    hosts = host_names(lab)
    for i in range(VMS_PER_HOST):
        for host in hosts:
            name = f"rss-{host}-{i:02d}"
            op = client.create_vm(VmCreate(name=name, image=IMAGE, memory=MEMORY, cpus=1,
                                           host=host, start=res.started_vms))
            client.wait(op.id, timeout=300)
            res.vms.setdefault(host, []).append(name)
        say(f"rss: {(i + 1) * len(hosts)}/{VMS_PER_HOST * len(hosts)} VMs "
            f"{'started' if res.started_vms else 'defined'}")
    res.create_s = time.monotonic() - t0
    if res.started_vms:
        every = [n for names in res.vms.values() for n in names]
        res.boot_s = boot_all(client, every, res.restarted)
        for host, names in res.vms.items():
            res.running[host] = qemus_running(lab, host, names)
            if res.running[host] != len(names):
                raise BenchError(f"{host}: {res.running[host]} of {len(names)} QEMUs running")
        say(f"rss: every guest booted ({res.boot_s:.0f} s); settling {SETTLE_S:g} s")
    read(res, lab, "")
    # The agents so far are the processes that joined (`python -m corral.agent join`, which
    # then serves); a host's agent started again later runs `corral.agent run`. Restart
    # each (`lab fault H kill-agent`: its lease guard starts it again, its QEMUs keep
    # running) and read them again.
    for host in hosts:
        before = agent_pids(lab)[host]
        lab.fault(host, "kill-agent")
        wait_restarted(lab, host, before)
    say("rss: every agent restarted (`corral.agent run`)")
    if res.started_vms:
        for host, names in res.vms.items():
            if qemus_running(lab, host, names) != len(names):
                raise BenchError(f"{host}: QEMUs gone after the agent's restart")
    read(res, lab, RESTARTED)


def wait_restarted(lab: Lab, host: str, before: int, timeout_s: float = 90.0) -> None:
    """Until ``host`` runs an agent other than ``before`` and the engine sees it `up`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = next(r for r in lab.status().hosts if r.name == host)
        if row.agent_pid not in (None, before) and row.engine_status == "up":
            return
        time.sleep(0.5)
    raise BenchError(f"{host}: its agent was not restarted within {timeout_s:g} s")


def read(res: Result, lab: Lab, suffix: str) -> None:
    """SETTLE_S of quiet, then SAMPLES readings a second apart; the agents' keys get
    ``suffix`` (engine and libvirtd are read in the first round only)."""
    time.sleep(SETTLE_S)
    for _ in range(SAMPLES):
        for which, value in sample(lab).items():
            if suffix and not which.startswith("agent"):
                continue
            res.samples_mib.setdefault(which + suffix, []).append(value)
        time.sleep(1.0)


def section(res: Result, started: str, duration_s: float) -> tuple[str, list[str]]:
    n = sum(len(v) for v in res.vms.values())
    how = (f"{n} running 128M VMs, {VMS_PER_HOST} pinned on each host, all booted "
           f"({res.create_s:.0f} s to create and start them, {res.boot_s:.0f} s more until "
           "every console showed the boot line)" if res.started_vms else
           f"{n} VMs of 128M defined and NOT started (`--stopped`), {VMS_PER_HOST} per host")
    if res.errors:
        how = f"{n} VMs of 128M created ({'started' if res.started_vms else 'stopped'}) " \
              "when the run failed"
    lines = [
        "## Cluster: engine and agent memory, 3-host lab (`bench/cluster_rss.py`)", "",
        f"Run {started}, {duration_s:.0f} s. Method: see the docstring of "
        f"`bench/cluster_rss.py`: `corral lab up --hosts 3 --cpu-overcommit "
        f"{CPU_OVERCOMMIT:g}` (each lab host shows this machine's CPUs); {how}; then {SETTLE_S:g} s of "
        f"quiet and {SAMPLES} readings of VmRSS (/proc/PID/status, the process alone: QEMU "
        "and libvirtd not counted) a second apart; the highest counts. Then each agent is "
        "restarted (`corral lab fault H kill-agent`; its lease guard starts it as "
        "`corral.agent run`, as after any restart of a host's agent, not as the `join` "
        "process `lab up` starts; its QEMUs keep running) and read again the same way "
        "(rows *restarted*). MB = 10^6 bytes.", "",
        "| process | no VM (MiB) | readings (MiB) | highest | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    missed: list[str] = []
    for which in res.samples_mib:
        peak = res.peak(which)
        target = (ENGINE_TARGET_MB if which == "engine" else
                  AGENT_TARGET_MB if which.startswith("agent") else None)
        verdict, shown = "info", "-"
        if target is not None:
            ok = peak * 1048576 / 1e6 < target
            verdict, shown = f"**{'PASS' if ok else 'MISS'}**", f"< {target:g} MB"
            if not ok:
                missed.append(f"{which} RSS {peak * 1048576 / 1e6:.1f} MB (target < "
                              f"{target:g} MB)")
        idle = res.idle_mib.get(which)
        lines.append(f"| {which} | {f'{idle:.1f}' if idle is not None else '-'} | "
                     f"{', '.join(f'{x:.1f}' for x in res.samples_mib[which])} | "
                     f"{mb(peak)} | {shown} | {verdict} |")
    if not res.samples_mib:
        lines.append("| engine, agents | not measured | | | < 150 MB / < 80 MB | n/a |")
    joined = [res.peak(k) for k in res.samples_mib if k.startswith("agent") and
              not k.endswith(RESTARTED)]
    restarted = [res.peak(k) for k in res.samples_mib if k.endswith(RESTARTED)]
    if joined and restarted:
        more = statistics.median(joined) - statistics.median(restarted)
        lines += ["", f"The agents as `lab up` starts them (the `join` process, serving on "
                  f"after its join) held {more:.0f} MiB more (medians) than the same agents "
                  "restarted as `corral.agent run`, with the same VMs."]
    if res.running:
        lines += ["", "QEMUs running per host when read: " + ", ".join(
            f"{h} {k}" for h, k in sorted(res.running.items())) + "."]
    if res.restarted:
        lines += ["", "Guests whose kernel panicked at boot (`IO-APIC + timer doesn't work`: "
                  "the kernel's timer check under TCG on a loaded machine) and were stopped "
                  "and started again: " + ", ".join(
                      f"{n} ({k}x)" for n, k in sorted(res.restarted.items())) + "."]
    lines.append("")
    lines += sections.closing_lines(res.errors, res.facts)
    return "\n".join(lines), missed


def _measure(res: Result, up: InLab) -> None:
    res.facts["guests"] = check_guests(up.client)
    measure(res, up.lab, up.client)


def main() -> int:
    return run_bench(
        SECTION, __doc__, REPORT, lab_root=Path("/var/tmp/corral-bench-cluster-rss"),
        options=lambda p: p.add_argument(
            "--stopped", action="store_true",
            help="define the VMs without starting them (nothing boots)"),
        result=lambda args, facts: Result(started_vms=not args.stopped, facts=facts),
        body=in_lab(LabSpec(PREFIX, cpu_overcommit=CPU_OVERCOMMIT), _measure,
                    "lab set-up (`lab up`, 3 hosts)"),
        section=lambda res, ran: section(res, ran.started, ran.duration_s))


if __name__ == "__main__":
    sys.exit(main())
