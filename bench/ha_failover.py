"""`python bench/ha_failover.py`: HA failover after a power loss, on the 3-host lab with a
shared pool (bench/benchlab.py). Writes its own section (``<!-- ha_failover -->``) of
docs/benchmarks.md. Needs root (the lab).

Method: `corral lab up --hosts 3 --storage shared` (every host gets the lab's fence agent
fence_corral_lab); one HA VM (image tiny, 128 MiB, root disk in pool `shared`, ``ha=True``,
placed by the scheduler), booted (its boot marker on the serial console). Each run powers
the VM's host off (``corral lab fault HOST power-off``: every process of the host killed at
once, its agent and the guest's QEMU included) and asks the engine's API every 50 ms (the
SDK: ``list_hosts``, ``get_vm``, then ``console_log``, which reads the VM's current host),
recording from the start of the power-off:

- detected: the host first shown not `up` (`unresponsive`; `down` if the poll missed it),
- fenced: the host `down` (its fence device confirmed it off),
- running: the VM `running` on another host (operation ``vm.recover``),
- booted: one more boot marker in its console log on that host than the file held before
  the power-off (the log is per host and appended to: a host the VM ran on before still
  holds the old markers, read from the host's console file just before the fault).

Then the old host is powered on, the run waits until it is `up` again, 2 s of quiet, and the
next run powers off the host the VM runs on now (so the hosts take turns). Phases:
detection, fencing (fenced - detected), restart (running - fenced), boot (booted - running).
Target (issue 15): power-off -> running under 10 s, median and max. Not measured: a network
cut with self-fencing (needs quorum, not built yet).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import sections
from benchlab import host_names
from benchmain import LabSpec, in_lab, run_bench
from corral.api import VmCreate
from corral.client import Client
from corral.errors import CorralError
from corral.images.tiny import BOOT_MARKER
from corral.lab.cluster import Lab
from timing import BenchError, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
SECTION = "ha_failover"
PREFIX = "bh"
VM = "bha"
MEMORY = "128M"  # the tiny image does not boot in 64 MiB (it hangs after the ROM)
POLL_S = 0.05
SETTLE_S = 2.0
FAILOVER_TIMEOUT_S = 180.0  # bound of one run's wait for the VM to boot elsewhere
UP_TIMEOUT_S = 180.0
BOOT_TIMEOUT_S = 300.0
TARGET_S = 10.0
PROXMOX_S = 120  # Proxmox VE's documented default failover time, for context


@dataclass
class Run:
    host: str  # powered off
    power_off_s: float  # how long `power-off` itself took
    detected_s: float = 0.0
    fenced_s: float = 0.0
    running_s: float = 0.0
    booted_s: float = 0.0
    to: str = ""  # where the VM runs again
    host_states: list[str] = field(default_factory=list)  # the old host's, in order seen
    vm_states: list[str] = field(default_factory=list)  # "state@host", in order seen
    recover_op_s: float | None = None  # the engine's vm.recover operation, created -> done
    up_again_s: float = 0.0

    @property
    def detection(self) -> float:
        return self.detected_s

    @property
    def fencing(self) -> float:
        return self.fenced_s - self.detected_s

    @property
    def restart(self) -> float:
        return self.running_s - self.fenced_s

    @property
    def boot(self) -> float:
        return self.booted_s - self.running_s


@dataclass
class Result:
    runs: list[Run] = field(default_factory=list)
    detect_setting: str = "?"
    fence_agent: str = "?"
    errors: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


def console_file(lab: Lab, host: str) -> Path:
    """The lab host's console log of the VM, as its agent writes it (state dir/console)."""
    return Path(lab.state().hosts[host].root_dir) / "agent" / "console" / f"{VM}.log"


def markers_on(lab: Lab, host: str) -> int:
    path = console_file(lab, host)
    return path.read_text(errors="replace").count(BOOT_MARKER) if path.exists() else 0


def markers_via_api(client: Client) -> int:
    try:
        return client.console_log(VM).count(BOOT_MARKER)
    except CorralError:
        return -1  # its host not reachable yet: not booted


def host_status(client: Client, host: str) -> str:
    for h in client.list_hosts():
        if h.name == host:
            return str(h.status)
    raise BenchError(f"the engine does not list host {host}")


def _note(seen: list[str], value: str) -> None:
    if not seen or seen[-1] != value:
        seen.append(value)


def create_vm(client: Client) -> str:
    say(f"creating HA VM {VM} ({MEMORY}, pool shared) and waiting for its boot marker")
    op = client.create_vm(VmCreate(name=VM, image="tiny", memory=MEMORY, pool="shared",
                                   ha=True, start=True))
    client.wait(op.id, timeout=600)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while markers_via_api(client) < 1:
        if time.monotonic() > deadline:
            raise BenchError(f"{VM} printed no boot marker in {BOOT_TIMEOUT_S:g} s")
        time.sleep(0.5)
    host = client.get_vm(VM).host
    if not host:
        raise BenchError(f"{VM} runs on no host")
    return host


def fail_over(lab: Lab, client: Client, host: str) -> Run:
    """Power ``host`` off and follow the engine until the VM has booted elsewhere."""
    before = {h: markers_on(lab, h) for h in host_names(lab) if h != host}
    t0 = time.monotonic()
    lab.fault(host, "power-off")
    run = Run(host, time.monotonic() - t0)
    deadline = t0 + FAILOVER_TIMEOUT_S
    detected = fenced = running = None
    while True:
        status = host_status(client, host)
        vm = client.get_vm(VM)
        now = time.monotonic() - t0
        _note(run.host_states, status)
        _note(run.vm_states, f"{vm.state}@{vm.host}")
        if detected is None and status != "up":
            detected = now
        if fenced is None and status == "down":
            fenced = now
        if running is None and str(vm.state) == "running" and vm.host not in (None, host):
            running, run.to = now, str(vm.host)
        if running is not None and vm.host == run.to and \
                markers_via_api(client) > before.get(run.to, 0):
            run.booted_s = time.monotonic() - t0
            break
        if time.monotonic() > deadline:
            raise BenchError(
                f"{VM} did not boot on another host {FAILOVER_TIMEOUT_S:g} s after {host} "
                f"lost power (host: {', '.join(run.host_states)}; VM: "
                f"{', '.join(run.vm_states)})")
        time.sleep(POLL_S)
    if detected is None or fenced is None:  # the VM ran elsewhere: the host was down
        raise BenchError(f"{VM} ran on {run.to} but {host} was never seen down "
                         f"(states: {', '.join(run.host_states)})")
    run.detected_s, run.fenced_s, run.running_s = detected, fenced, running or 0.0
    if run.running_s < run.fenced_s:  # HA restarts only what is fenced: say so loudly
        raise BenchError(f"{VM} ran on {run.to} at {run.running_s:.2f} s, before {host} was "
                         f"seen down ({run.fenced_s:.2f} s)")
    run.recover_op_s = last_recovery_s(client)
    return run


def last_recovery_s(client: Client) -> float | None:
    try:
        ops = client.list_operations(5, type="vm.recover")
    except CorralError:
        return None
    done = [o for o in ops if o.status.value == "success"]
    if not done:
        return None
    newest = max(done, key=lambda o: o.created_at)
    return (newest.updated_at - newest.created_at).total_seconds()


def power_on(lab: Lab, client: Client, host: str) -> float:
    t0 = time.monotonic()
    lab.fault(host, "power-on", wait=False)
    while host_status(client, host) != "up":
        if time.monotonic() - t0 > UP_TIMEOUT_S:
            raise BenchError(f"{host} not up {UP_TIMEOUT_S:g} s after its power-on")
        time.sleep(0.2)
    return time.monotonic() - t0


def measure(res: Result, lab: Lab, client: Client, runs: int) -> None:
    methods = client.fence_methods(host_names(lab)[0])
    if not methods:
        raise BenchError("`lab up` gave the hosts no fence method")
    res.fence_agent = methods[0].agent
    with contextlib.suppress(CorralError):  # an engine without the setting: "?"
        res.detect_setting = f"{client.cluster_setting('ha.detect_s').value} s"
    host = create_vm(client)
    for i in range(runs):
        time.sleep(SETTLE_S)
        if host_status(client, host) != "up":
            raise BenchError(f"{host} is not up before run {i + 1}")
        run = fail_over(lab, client, host)
        run.up_again_s = power_on(lab, client, host)
        res.runs.append(run)
        say(f"run {i + 1}/{runs}: {host} off -> detected {run.detected_s:.2f} s, fenced "
            f"{run.fenced_s:.2f} s, running on {run.to} {run.running_s:.2f} s, booted "
            f"{run.booted_s:.2f} s; {host} up again after {run.up_again_s:.1f} s")
        host = run.to


# -- the report -------------------------------------------------------------------------------

def section(res: Result, runs: int, started: str, duration_s: float
            ) -> tuple[str, list[str]]:
    lines = [
        "## HA failover after a power loss (`bench/ha_failover.py`)", "",
        f"Run {started}, {duration_s:.0f} s: `make bench BENCHES=ha_failover` (or "
        f"`.venv/bin/python bench/ha_failover.py --runs {runs}`). Method: see the docstring "
        "of `bench/ha_failover.py`: a 3-host lab, shared directory pool, one HA tiny guest "
        f"of {MEMORY} (TCG; 64 MiB does not boot it); each run powers its host off (`corral lab fault HOST "
        f"power-off`), the API is asked every {POLL_S * 1000:.0f} ms until the VM runs on "
        "another host and its boot marker is on that host's console; power-on and `up` "
        f"again between runs. `ha.detect_s` {res.detect_setting}, fence agent "
        f"`{res.fence_agent}` (the lab's, ClusterLabs protocol). No raw tool to compare "
        "with.", "",
    ]
    missed: list[str] = []
    rs = res.runs
    lines += ["| measure | median / max | target | verdict |", "|---|---|---|---|"]
    if rs:
        rows, miss = sections.timed_rows(
            "power-off -> VM `running` on another host", "power-off -> running",
            [r.running_s for r in rs], TARGET_S, [
                ("detection: power-off -> host `unresponsive`", [r.detection for r in rs]),
                ("fencing: -> host `down` (fence confirmed off)", [r.fencing for r in rs]),
                ("restart: -> VM `running` elsewhere", [r.restart for r in rs]),
                ("boot: -> boot marker on the console", [r.boot for r in rs]),
                ("power-off -> boot marker (total)", [r.booted_s for r in rs])])
        lines += rows
        missed += [miss] if miss else []
        ops = [r.recover_op_s for r in rs if r.recover_op_s is not None]
        if ops:
            lines.append(f"| the `vm.recover` operation itself (created -> done) | "
                         f"{sections.p50_max(ops)} | - | info |")
    else:
        lines.append(f"| power-off -> VM `running` on another host | not measured | < "
                     f"{TARGET_S:g} s | n/a |")
    lines += ["", "For context: Proxmox VE's ha-manager documentation gives \"typical error "
              f"detection and failover times of about 2 minutes\" (~{PROXMOX_S} s; watchdog "
              "self-fencing with fixed timeouts, <https://pve.proxmox.com/wiki/"
              "High_Availability>); corral fences through the hosts' power devices instead."]
    if rs:
        lines += ["", "| run | host off | to | detected | fenced | running | booted | "
                  "host states seen | power-on -> `up` (info) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(rs, 1):
            lines.append(f"| {i} | {r.host} | {r.to} | {r.detected_s:.2f} s | "
                         f"{r.fenced_s:.2f} s | {r.running_s:.2f} s | {r.booted_s:.2f} s | "
                         f"{', '.join(r.host_states)} | {r.up_again_s:.1f} s |")
        lines += ["", "Times from the start of the power-off. Detection waits for "
                  "`ha.detect_s` of silence (the last heartbeat is 0-1 s old at the "
                  "power-off); fencing runs the fence agent (`status` confirms off); restart "
                  "is the HA loop's next tick (0.25 s) and the `vm.recover` operation (the "
                  "scheduler, then the domain defined and started on the new host); boot is "
                  "the tiny guest's boot under TCG."]
    lines += ["", "Not measured: failover after a network cut with self-fencing (lease time "
              "+ restart): it needs quorum, not built yet. The simulator's throughput: see "
              "the section \"HA simulator\" (`bench/ha_simulator.py`).", ""]
    lines += sections.closing_lines(res.errors, res.facts)
    return "\n".join(lines), missed


def main() -> int:
    return run_bench(
        SECTION, __doc__, REPORT, lab_root=Path("/var/tmp/corral-bench-ha"),
        options=lambda p: p.add_argument("--runs", type=int, default=10,
                                         help="power-offs (at least 1)"),
        positive=["runs"], result=lambda _args, facts: Result(facts=facts),
        body=in_lab(LabSpec(PREFIX, storage="shared"),
                    lambda res, up: measure(res, up.lab, up.client, up.args.runs),
                    "lab set-up (`lab up`, 3 hosts, shared pool)"),
        section=lambda res, ran: section(res, ran.args.runs, ran.started, ran.duration_s))


if __name__ == "__main__":
    sys.exit(main())
