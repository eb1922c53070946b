"""The engine as the simulator runs it: it hears reports, derives each host's quorum from
its peers' membership reports, builds a ClusterView, calls ``policy.decide`` every round and
does what it says — fence, recover in its order onto its targets — plus what the real
engine does around it (answering reports, restarting an HA VM in place on a healthy host,
destroying a moved VM's leftover). Nothing bypasses the policy: a VM's row moves to another
host only because ``decide`` listed it in ``recover``.

What it knows is only what reached it; its memory (last heard, fence runs, quorum) is lost
when it stops. The VM rows are its database: they survive a restart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from corral.ha.membership import Seen, Standing, derive
from corral.ha.model import ClusterView, Decision, Fence, HostView, Quorum, VmView
from corral.ha.policy import decide
from corral.ha.sim.scenario import ENGINE
from corral.ha.sim.world import Report, World

Trace = Callable[[str], None]
Check = Callable[[str, str, str], None]  # vm, from host, to host: before a row moves


@dataclass
class Known:
    """What the engine knows of one host (memory, lost on restart)."""

    last_heard: int
    fence: Fence = Fence.NONE
    fence_at: int = 0
    fence_reason: str = ""
    fence_run: int = 0  # which run is under way (0: none)
    report: Report | None = None
    report_at: int = 0
    quorum: Quorum = Quorum.UNKNOWN
    out_since: int = 0


@dataclass
class Row:
    host: str
    ha: bool
    priority: int
    wants_running: bool = True


class SimEngine:
    def __init__(self, world: World, trace: Trace, check_move: Check) -> None:
        self.w = world
        self.trace = trace
        self.check_move = check_move
        self.clock_ms = world.rng.randint(0, 10**9)
        self.wall_ms = world.rng.randint(0, 10**12)  # jumps; never read
        self.rows = {v.name: Row(v.host, v.ha, v.priority) for v in world.sc.vms}
        self.fence_conf = {h.name: h.fence for h in world.sc.hosts}
        self.up = False
        self.epoch = 0
        self.runs = 0
        self.known: dict[str, Known] = {}
        self.busy: dict[str, int] = {}
        self.last: Decision | None = None
        self.last_words: dict[str, str] = {}
        self.last_waits: dict[str, str] = {}
        self.start()

    def now(self) -> int:
        return self.w.t + self.clock_ms

    def start(self) -> None:
        self.up, self.epoch = True, self.epoch + 1
        self.known = {name: Known(self.now()) for name in self.w.hosts}
        self.busy = {}
        self.trace(f"engine starts (epoch {self.epoch}): every host counts from now")

    def stop(self) -> None:
        self.up = False
        self.trace("engine stops")

    # -- messages --------------------------------------------------------------------------

    def on_report(self, r: Report) -> None:
        k = self.known[r.host]
        k.last_heard, k.report, k.report_at = self.now(), r, self.now()
        self.w.send(ENGINE, r.host, "answer", r.sent_host_s, r.boot, r.agent_inc)
        for vm in sorted(r.running):
            row = self.rows[vm]
            if row.host == r.host:
                self.busy.pop(vm, None)
            if row.host != r.host:  # a moved VM's leftover: destroy it
                self.trace(f"engine: {vm} runs on {r.host} but its row says {row.host}: destroy")
                self.w.send(ENGINE, r.host, "destroy", vm, r.boot)

    def on_started(self, host: str, vm: str, ok: bool) -> None:
        # A started VM stays busy until a report shows it (reports sent before the start
        # would have it restarted again); a failed one is free at once.
        if not ok and self.rows[vm].host == host:
            self.busy.pop(vm, None)
        self.trace(f"engine: start of {vm} on {host} {'done' if ok else 'failed'}")

    def on_fence_done(self, host: str, epoch: int, run: int, ok: bool, reason: str) -> None:
        k = self.known[host]
        if epoch != self.epoch or k.fence_run != run:
            return  # a run of an engine that has since restarted: its result is lost
        k.fence_run = 0
        k.fence, k.fence_at = (Fence.CONFIRMED if ok else Fence.FAILED), self.now()
        k.fence_reason = "" if ok else reason
        self.trace(f"engine: fence of {host} {'confirmed off' if ok else 'failed: ' + reason}")

    # -- one round -------------------------------------------------------------------------

    def _derive_quorum(self, now: int) -> None:
        """corral.ha.membership's rule, on the engine's millisecond clock."""
        seen = {name: None if k.report is None or k.report.view is None else
                Seen(k.report_at, k.report.quorate, k.report.view)
                for name, k in self.known.items()}
        before = {name: Standing(k.quorum, k.out_since) for name, k in self.known.items()}
        for name, st in derive(now, self.w.sc.settings.detect_s * 1000, seen, before).items():
            k = self.known[name]
            k.quorum, k.out_since = st.quorum, int(st.out_since)

    def view(self) -> ClusterView:
        now = self.now()
        self._derive_quorum(now)
        hosts = tuple(HostView(name, k.last_heard / 1000, False, self.fence_conf[name], k.fence,
                               k.fence_at / 1000, k.fence_reason, k.quorum, k.out_since / 1000,
                               lease_armed=self.w.sc.quorum)
                      for name, k in self.known.items())
        vms = tuple(VmView(name, r.host, r.ha, r.priority, r.wants_running, name in self.busy)
                    for name, r in self.rows.items())
        return ClusterView(now / 1000, hosts, vms, self.w.sc.settings)

    def round(self) -> Decision:
        now = self.now()
        for vm in [vm for vm, until in self.busy.items() if until <= now]:
            del self.busy[vm]
        d = decide(self.view())
        self.last = d
        for name, words in d.hosts.items():
            shape = re.sub(r"[0-9.]+", "#", words)  # the seconds change every round
            if self.last_words.get(name) != shape:
                self.trace(f"engine: {name}: {words}")
            self.last_words[name] = shape
        for vm, why in d.waiting.items():
            shape = re.sub(r"[0-9.]+", "#", why)
            if self.last_waits.get(vm) != shape:
                self.trace(f"engine: {vm} waits: {why}")
            self.last_waits[vm] = shape
        self.last_waits = {vm: w for vm, w in self.last_waits.items() if vm in d.waiting}
        for host in d.fence:
            self._fence(host)
        self._recover(d)
        self._restart_in_place(d)
        return d

    def _fence(self, host: str) -> None:
        k = self.known[host]
        self.runs += 1
        k.fence, k.fence_at, k.fence_run = Fence.FENCING, self.now(), self.runs
        h = self.w.hosts[host]
        tm = self.w.tm
        took = self.w.rng.randint(*(tm.fence_slow if h.fence_slow else tm.fence_run))
        self.trace(f"engine: fence {host} (takes {took / 1000:.1f} s)")
        self.w.schedule(self.w.t + took, "fence_done", host, self.epoch, self.runs)

    def _load(self) -> dict[str, int]:
        load = dict.fromkeys(self.w.hosts, 0)
        for r in self.rows.values():
            if r.wants_running:
                load[r.host] += 1
        return load

    def _recover(self, d: Decision) -> None:
        load = self._load()
        for vm in d.recover:
            row = self.rows[vm]
            # a target it has heard since it started (its boot, its VMs: the scheduler's facts)
            room = [t for t in d.targets if t != row.host and load[t] < self.w.hosts[t].slots
                    and self.known[t].report is not None]
            if not room:
                self.trace(f"engine: {vm} waits: no target with room")
                continue
            target = min(room, key=lambda t: (load[t], d.targets.index(t)))
            self.check_move(vm, row.host, target)
            self.trace(f"engine: recover {vm} from {row.host} to {target} "
                       f"({d.safe.get(row.host, '?')})")
            load[row.host] -= 1
            load[target] += 1
            row.host = target  # the claim first: from now on only `target` may run it
            self._send_start(vm, target)

    def _send_start(self, vm: str, host: str) -> None:
        report = self.known[host].report
        assert report is not None  # only hosts heard since the engine started get starts
        self.busy[vm] = self.now() + self.w.tm.start_timeout
        self.w.send(ENGINE, host, "start", vm, report.boot)

    def _restart_in_place(self, d: Decision) -> None:
        """An HA VM whose healthy host reports it not running is started there again."""
        for vm, row in self.rows.items():
            if not (row.ha and row.wants_running) or vm in self.busy or row.host in d.lost:
                continue
            k = self.known[row.host]
            if k.report is not None and vm not in k.report.running:
                self.trace(f"engine: {vm} is not running on {row.host}: start it there")
                self._send_start(vm, row.host)
