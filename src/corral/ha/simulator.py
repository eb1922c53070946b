"""The deterministic HA simulator: hosts, links, agents, fence devices and the engine on a
virtual clock, in one process, driven by ``corral.ha.policy`` and ``corral.ha.lease``.

``simulate(scenario)`` runs one scenario step by step (100 ms) and checks the invariants of
``corral.ha.sim.invariants`` at every step; ``simulate(generate(seed))`` replays a generated
one exactly (the same seed gives the same run, whatever the machine or PYTHONHASHSEED).
The world is in ``sim.world``, the engine in ``sim.engine``, the scenarios in
``sim.scenario``; docs/ha.md ("The simulator") says what is modelled and what is not.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from corral.ha.model import Decision
from corral.ha.sim.engine import SimEngine
from corral.ha.sim.invariants import Checker, Violation
from corral.ha.sim.scenario import (
    ENGINE,
    Direction,
    Fault,
    FaultKind,
    Scenario,
    generate,
)
from corral.ha.sim.world import SimHost, World

__all__ = ["Outcome", "Scenario", "Violation", "generate", "simulate"]

FENCE_ERROR = "fence agent exited 1: the device did not answer"


@dataclass
class Outcome:
    scenario: Scenario
    violation: Violation | None
    trace: list[str]
    rows: dict[str, str]  # vm -> the host its row names, at the end
    running: dict[str, list[str]]  # vm -> the hosts running it, at the end
    last: Decision | None  # the engine's last decision
    downtimes_s: list[float] = field(default_factory=list)  # HA VM stopped -> running again
    steps: int = 0

    @property
    def ok(self) -> bool:
        return self.violation is None

    def report(self, tail: int = 40) -> str:
        sc = self.scenario
        lines = [f"seed {sc.seed}, step {self.steps}: {self.violation or 'no violation'}",
                 f"scenario: {sc.describe()}",
                 f"replay (a generated scenario): CORRAL_HA_SEED={sc.seed} .venv/bin/pytest "
                 f"-q -s tests/unit/test_ha_simulator.py -k replay",
                 f"trace (last {tail} lines):", *self.trace[-tail:]]
        return "\n".join(lines)


class _Run:
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.tm = sc.timings
        self.w = World(sc, random.Random(f"corral-ha-sim-{sc.seed}"))
        self.trace: list[str] = []
        self.check = Checker(self.w)
        self.down_since: dict[str, int] = {}
        self.downtimes: list[float] = []
        self.w.on_kill = self._killed
        self.engine = SimEngine(self.w, self.say, self.check.move)
        self.calm = False
        for f in sc.faults:
            self.w.schedule(f.at_ms, "fault", f)
        self.w.schedule(sc.faults_end_ms, "calm")

    def say(self, message: str) -> None:
        self.trace.append(f"{self.w.t / 1000:7.1f} s  {message}")

    def _killed(self, h: SimHost, vm: str, cause: str) -> None:
        self.say(f"{h.name}: {vm} stops ({cause})")
        self.check.kill(h, vm, cause)
        if self.w.ha[vm] and cause != "destroy":
            self.down_since.setdefault(vm, self.w.t)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> Outcome:
        violation, steps = None, 0
        try:
            for t in range(0, self.sc.end_ms + 1, self.tm.step):
                self.w.t, steps = t, steps + 1
                self._events()
                for h in self.w.hosts.values():
                    if h.powered:
                        self._host(h)
                if self.engine.up and t % self.tm.round_every == 0:
                    self.engine.round()
                self.check.two_copies()
            if self.sc.check_liveness:
                rows = {vm: r.host for vm, r in self.engine.rows.items()}
                wants = {vm: r.wants_running for vm, r in self.engine.rows.items()}
                bad = self.check.liveness(rows, wants)
                if bad:
                    raise Violation("liveness", self.w.t, "after a calm of "
                                    f"{self.sc.calm_ms / 1000:.0f} s: " + "; ".join(bad))
        except Violation as v:
            violation = v
            self.say(f"VIOLATION {v}")
        return Outcome(self.sc, violation, self.trace,
                       {vm: r.host for vm, r in self.engine.rows.items()},
                       {vm: self.w.running_on(vm) for vm in self.engine.rows},
                       self.engine.last, self.downtimes, steps)

    def _events(self) -> None:
        w = self.w
        while w.events and w.events[0][0] <= w.t:
            _, _, kind, p = heapq.heappop(w.events)
            getattr(self, f"_on_{kind}")(*p)

    def _host(self, h: SimHost) -> None:
        w, t, tm = self.w, self.w.t, self.tm
        if h.pending is not None and h.pending[1] <= t:
            h.view, h.pending = h.pending[0], None
            self.say(f"{h.name} sees membership {sorted(h.view[0])} "
                     f"{'quorate' if h.view[1] else 'NOT quorate'}")
        if not h.agent and h.agent_back_at is not None and t >= h.agent_back_at:
            w.agent_start(h)
            self.say(f"{h.name}: agent up")
        if h.agent and t >= h.next_report:
            w.send(h.name, ENGINE, "report", w.report(h), extra=h.hb_extra)
            h.next_report += tm.report_every
        if h.agent and self.sc.quorum and (t - h.report_phase) % tm.quorum_check_every == 0 \
                and h.view[1] and h.name in h.view[0]:
            h.lease.renew(h.mono_s(t))
        if h.lease.lapsed(h.mono_s(t)):
            ha = [vm for vm in sorted({*h.running, *h.starting}) if w.ha[vm]]
            for vm in ha:
                w.stop_vm(h, vm, "self-fence")
            if ha:
                self.say(f"{h.name}: lease lapsed: its HA VMs stopped ({', '.join(ha)})")
            if self.sc.supervisor_leaves and not h.agent and h.in_corosync:
                h.in_corosync, h.view, h.pending = False, (frozenset(), False), None
                w.membership_changed()
                self.say(f"{h.name}: supervisor takes it out of the membership (agent dead)")

    # -- events ----------------------------------------------------------------------------

    def _on_msg(self, src: str, dst: str, kind: str, p: tuple[Any, ...]) -> None:
        w = self.w
        if not w.link_up(src, dst):
            return
        # A report is an HTTP request: over TCP, a host that hears nobody cannot even open
        # the connection (the handshake needs both ways), so the engine hears nothing.
        if kind == "report" and not w.link_up(dst, src):
            return
        if dst == ENGINE:
            if self.engine.up:
                if kind == "report":
                    self.engine.on_report(p[0])
                else:
                    self.engine.on_started(src, p[0], p[1])
            return
        h = w.hosts[dst]
        if not (h.powered and h.agent):
            return
        if kind == "answer":
            if (h.boot, h.agent_inc) == (p[1], p[2]):
                h.lease.renew(p[0])
        elif kind == "start":
            self._start(h, p[0], p[1])
        elif kind == "destroy" and p[1] == h.boot:
            w.stop_vm(h, p[0], "destroy")

    def _start(self, h: SimHost, vm: str, boot: int) -> None:
        w = self.w
        if boot != h.boot:
            return  # addressed to a previous boot of the host: stale
        if vm in h.running:
            w.send(h.name, ENGINE, "started", vm, True)
        elif vm not in h.starting:
            if not w.can_start(h, vm):
                self.say(f"{h.name}: refuses to start {vm}: its lease has lapsed")
                w.send(h.name, ENGINE, "started", vm, False)
                return
            h.starting[vm] = w.t
            w.schedule(w.t + w.rng.randint(*self.tm.vm_start), "qemu_up", h.name, vm, h.boot)

    def _on_qemu_up(self, host: str, vm: str, boot: int) -> None:
        w = self.w
        h = w.hosts[host]
        if not (h.powered and h.boot == boot and vm in h.starting):
            return
        del h.starting[vm]
        ok = w.can_start(h, vm)
        if ok:
            h.running[vm] = None
            self.check.started(h, vm)
            self.say(f"{host}: {vm} running")
            since = self.down_since.pop(vm, None)
            if since is not None:
                self.downtimes.append((w.t - since) / 1000)
        if h.agent:
            w.send(host, ENGINE, "started", vm, ok)

    def _on_fence_done(self, host: str, epoch: int, run: int) -> None:
        h = self.w.hosts[host]
        ok = not h.fence_fail
        if ok and self.w.power_off(h, "fence"):
            self.say(f"fence device powers {host} off")
        if self.engine.up:
            self.engine.on_fence_done(host, epoch, run, ok, "" if ok else FENCE_ERROR)

    def _on_power_on(self, host: str) -> None:
        if self.calm:
            return  # in the calm, hosts that are off stay off (they are the failed ones)
        if self.w.power_on(self.w.hosts[host]):
            self.say(f"{host} powered on")

    def _on_engine_start(self) -> None:
        if not self.engine.up:
            self.engine.start()

    def _on_undo(self, what: str, args: tuple[Any, ...]) -> None:
        w = self.w
        if what == "links":
            healed = [(a, b) for a, b in args if w.set_link(a, b, down=False)]
            if healed:
                self.say(f"links heal: {_pairs(tuple(healed))}")
                w.membership_changed()
        elif what in ("fence_fail", "fence_slow", "hb_extra"):
            h = w.hosts[args[0]]
            setattr(h, what, max(0, getattr(h, what) - args[1]))

    def _later(self, f: Fault, what: str, *args: Any) -> None:
        """Undo after the fault's duration (without one, the calm undoes it)."""
        if f.duration_ms:
            self.w.schedule(self.w.t + f.duration_ms, "undo", what, args)

    def _on_fault(self, f: Fault) -> None:
        w = self.w
        self.say(f"FAULT {f}")
        h = w.hosts.get(f.host)
        k = f.kind
        if k is FaultKind.POWER_OFF and h is not None:
            w.power_off(h, "power-off")
            if f.duration_ms:
                w.schedule(w.t + f.duration_ms, "power_on", h.name)
        elif k is FaultKind.POWER_ON and h is not None:
            self._on_power_on(h.name)
        elif k is FaultKind.PARTITION:
            cut = _cut(f, [ENGINE, *w.hosts])
            if [(a, b) for a, b in cut if w.set_link(a, b, down=True)]:
                w.membership_changed()
            self._later(f, "links", *cut)
        elif k is FaultKind.AGENT_CRASH and h is not None:
            w.agent_crash(h, w.t + f.duration_ms if f.duration_ms else None)
        elif k is FaultKind.ENGINE_STOP and self.engine.up:
            self.engine.stop()
            w.schedule(w.t + max(f.duration_ms, self.tm.step), "engine_start")
        elif k in (FaultKind.FENCE_FAIL, FaultKind.FENCE_SLOW) and h is not None:
            what = "fence_fail" if k is FaultKind.FENCE_FAIL else "fence_slow"
            setattr(h, what, getattr(h, what) + 1)
            self._later(f, what, h.name, 1)
        elif k is FaultKind.HEARTBEAT_DELAY and h is not None:
            h.hb_extra += f.amount_ms
            self._later(f, "hb_extra", h.name, f.amount_ms)
        elif k is FaultKind.CLOCK_JUMP:
            # Only wall clocks jump; the HA logic reads none (reports carry it, unread).
            if h is not None:
                h.wall_ms += f.amount_ms
            else:
                self.engine.wall_ms += f.amount_ms

    def _on_calm(self) -> None:
        """The faults end: links heal, agents restart, fence devices and the engine work;
        hosts that are off stay off (they are the failed ones)."""
        w = self.w
        self.calm = True
        self.say("CALM: links heal, agents restart, fence devices work, the engine runs")
        w.down.clear()
        for h in w.hosts.values():
            h.fence_fail = h.fence_slow = h.hb_extra = 0
            if h.powered and not h.agent:
                h.agent_back_at = w.t
        w.membership_changed()
        if not self.engine.up:
            self.engine.start()


def _cut(f: Fault, nodes: list[str]) -> list[tuple[str, str]]:
    """The directed links a partition cuts: between its side and every other node."""
    side = [n for n in nodes if n in f.hosts]
    rest = [n for n in nodes if n not in f.hosts and (not f.peers or n in f.peers)]
    out = f.direction in (Direction.BOTH, Direction.OUT)
    into = f.direction in (Direction.BOTH, Direction.IN)
    return [(a, b) for a in side for b in rest if out] + \
        [(b, a) for a in side for b in rest if into]


def _pairs(pairs: tuple[Any, ...]) -> str:
    return ", ".join(f"{a}->{b}" for a, b in pairs)


def simulate(scenario: Scenario) -> Outcome:
    """Run ``scenario`` to its end (or its first violation)."""
    return _Run(scenario).run()


def run_seed(seed: int) -> Outcome:
    return simulate(generate(seed))
