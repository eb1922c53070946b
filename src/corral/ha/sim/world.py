"""The simulated world's truth: hosts (power, agent, QEMUs, lease, membership view), the
links between them and the engine, and messages in flight.

Each host has its own monotonic clock (its own origin) and wall clock; the lease is kept
on the host's monotonic clock, as the real one is. Iteration is always in a fixed order
(hosts in the scenario's order, VMs sorted): a run must not depend on string hashing.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corral.ha.lease import HostLease
from corral.ha.sim.scenario import ENGINE, Scenario

Kill = Callable[["SimHost", str, str], None]  # host, vm, cause: told before a QEMU stops


@dataclass
class SimHost:
    name: str
    slots: int
    fence: bool
    clock_ms: int  # origin of its monotonic clock
    wall_ms: int  # offset of its wall clock (jumps; nothing may read it)
    lease: HostLease
    report_phase: int
    powered: bool = True
    boot: int = 1
    agent: bool = True
    agent_inc: int = 1
    agent_back_at: int | None = None
    agent_since: int = -10**9
    in_corosync: bool = True
    running: dict[str, None] = field(default_factory=dict)  # ordered set
    starting: dict[str, int] = field(default_factory=dict)  # vm -> when QEMU is up
    view: tuple[frozenset[str], bool] = (frozenset(), False)
    pending: tuple[tuple[frozenset[str], bool], int] | None = None
    quorate_since: int | None = None  # truth: in a quorate component since
    hb_extra: int = 0
    fence_fail: int = 0  # counters: overlapping faults
    fence_slow: int = 0
    next_report: int = 0

    def mono_s(self, t: int) -> float:
        return (t + self.clock_ms) / 1000


@dataclass(frozen=True)
class Report:
    host: str
    sent_host_s: float  # on the host's monotonic clock: for its lease only
    sent_wall_ms: int  # the host's wall clock: carried like a real report, never read
    boot: int
    agent_inc: int
    running: frozenset[str]
    view: frozenset[str] | None  # its membership (None: no quorum provider)
    quorate: bool


class World:
    def __init__(self, sc: Scenario, rng: random.Random) -> None:
        self.sc = sc
        self.tm = sc.timings
        self.rng = rng
        self.t = 0
        self.ha = {v.name: v.ha for v in sc.vms}
        self.hosts: dict[str, SimHost] = {}
        for spec in sc.hosts:
            lease = HostLease(sc.settings.lease_s, enforced=sc.quorum)
            h = SimHost(spec.name, spec.slots, spec.fence, rng.randint(0, 10**9),
                        rng.randint(0, 10**12), lease, rng.randint(0, 9) * 100)
            h.next_report = h.report_phase
            h.lease.renew(h.mono_s(0))
            self.hosts[h.name] = h
        for vm in sc.vms:
            self.hosts[vm.host].running[vm.name] = None
        self.down: dict[tuple[str, str], int] = {}
        self.events: list[tuple[int, int, str, tuple[Any, ...]]] = []
        self._seq = 0
        self.votes = len(self.hosts)
        self.on_kill: Kill = lambda h, vm, why: None
        self.membership_changed(initial=True)

    # -- events and links ------------------------------------------------------------------

    def schedule(self, at: int, kind: str, *payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.events, (at, self._seq, kind, payload))

    def link_up(self, a: str, b: str) -> bool:
        return not self.down.get((a, b))

    def set_link(self, a: str, b: str, down: bool) -> bool:
        """Count a cut (or a heal) of a→b; True when its state changed."""
        before = self.link_up(a, b)
        self.down[(a, b)] = max(0, self.down.get((a, b), 0) + (1 if down else -1))
        return before != self.link_up(a, b)

    def send(self, src: str, dst: str, kind: str, *payload: Any, extra: int = 0) -> None:
        """A message that arrives if the link is up when sent and when it arrives."""
        if self.link_up(src, dst):
            self.schedule(self.t + self.rng.randint(*self.tm.net_delay) + extra, "msg",
                          src, dst, kind, payload)

    # -- membership (corosync-like) --------------------------------------------------------

    def components(self) -> dict[str, frozenset[str]]:
        members = [h.name for h in self.hosts.values() if h.powered and h.in_corosync]
        comp = {m: {m} for m in members}
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if comp[a] is not comp[b] and self.link_up(a, b) and self.link_up(b, a):
                    merged = comp[a] | comp[b]
                    for m in merged:
                        comp[m] = merged
        return {m: frozenset(c) for m, c in comp.items()}

    def quorate(self, members: frozenset[str]) -> bool:
        return 2 * len(members) > self.votes

    def membership_changed(self, initial: bool = False) -> None:
        """Recompute the true components; each host's view follows after its token delay
        (an earlier pending change keeps its time: views lag by at most one token)."""
        if not self.sc.quorum:
            return
        comps = self.components()
        for h in self.hosts.values():
            members = comps.get(h.name, frozenset())
            target = (members, bool(members) and self.quorate(members))
            if target[1]:
                h.quorate_since = self.t if h.quorate_since is None else h.quorate_since
            else:
                h.quorate_since = None
            if initial:
                h.view = target
            elif target == h.view:
                h.pending = None
            elif h.pending is None:
                h.pending = (target, self.t + self.rng.randint(*self.tm.token))
            else:
                h.pending = (target, h.pending[1])

    # -- host power and agent --------------------------------------------------------------

    def stop_vm(self, h: SimHost, vm: str, cause: str) -> None:
        if vm in h.running:
            self.on_kill(h, vm, cause)
            del h.running[vm]
        h.starting.pop(vm, None)

    def power_off(self, h: SimHost, cause: str) -> bool:
        if not h.powered:
            return False
        for vm in sorted(h.running):
            self.stop_vm(h, vm, cause)
        h.powered, h.agent, h.in_corosync = False, False, False
        h.starting.clear()
        h.agent_back_at, h.pending = None, None
        h.view = (frozenset(), False)
        self.membership_changed()
        return True

    def power_on(self, h: SimHost) -> bool:
        if h.powered:
            return False
        h.powered, h.boot = True, h.boot + 1
        h.lease = HostLease(self.sc.settings.lease_s, enforced=self.sc.quorum)
        h.agent_back_at = self.t + self.rng.randint(*self.tm.agent_boot)
        return True

    def agent_start(self, h: SimHost) -> None:
        h.agent, h.agent_inc, h.agent_since, h.agent_back_at = True, h.agent_inc + 1, self.t, None
        h.next_report = self.t + h.report_phase
        if not h.in_corosync:
            h.in_corosync = True
            self.membership_changed()

    def agent_crash(self, h: SimHost, back_at: int | None) -> None:
        if h.powered:
            h.agent, h.agent_back_at = False, back_at

    def can_start(self, h: SimHost, vm: str) -> bool:
        """A host runs an HA VM only while its lease holds (a lapsed one refuses)."""
        return not (self.ha[vm] and h.lease.lapsed(h.mono_s(self.t)))

    def report(self, h: SimHost) -> Report:
        view, quorate = h.view if self.sc.quorum else (None, False)
        return Report(h.name, h.mono_s(self.t), self.t + h.wall_ms, h.boot, h.agent_inc,
                      frozenset(h.running), view, quorate)

    def running_on(self, vm: str) -> list[str]:
        return [h.name for h in self.hosts.values() if h.powered and vm in h.running]

    def may_start(self, h: SimHost, vm: str) -> bool:
        """Truth: ``vm`` is starting on ``h``, or a start of it is on its way there."""
        if not h.powered:
            return False
        if vm in h.starting:
            return True
        return any(kind == "msg" and p[1] == h.name and p[2] == "start" and p[3][0] == vm
                   and p[3][1] == h.boot for _, _, kind, p in self.events)

    def engine_links(self, name: str) -> tuple[bool, bool]:
        return self.link_up(name, ENGINE), self.link_up(ENGINE, name)
