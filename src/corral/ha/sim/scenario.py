"""What a simulated run is made of: the cluster (hosts, VMs, quorum provider), its faults,
and the world's timings; and ``generate(seed)``, a random scenario drawn from a seed.

Times are integer milliseconds of the simulator's virtual clock (no float drift, no
``time.*``): a run is a pure function of its scenario.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum

from corral.ha.model import Settings

ENGINE = "engine"  # the engine's end of a link


class FaultKind(StrEnum):
    POWER_OFF = "power-off"  # host; duration_ms > 0: powered on again after it
    POWER_ON = "power-on"  # host
    PARTITION = "partition"  # hosts (may hold ENGINE) vs peers (or the rest); direction
    AGENT_CRASH = "agent-crash"  # host; duration_ms: restarted after it, 0: stays dead
    ENGINE_STOP = "engine-stop"  # duration_ms: down for it (restart: memory lost)
    FENCE_FAIL = "fence-fail"  # host: its fence device errors for duration_ms
    FENCE_SLOW = "fence-slow"  # host: its fence runs take 5-9 s for duration_ms
    HEARTBEAT_DELAY = "heartbeat-delay"  # host: reports take amount_ms more
    CLOCK_JUMP = "clock-jump"  # host's (or, host "", the engine's) wall clock jumps


class Direction(StrEnum):
    BOTH = "both"
    OUT = "out"  # only from the side's members to the others
    IN = "in"  # only from the others to the side's members


@dataclass(frozen=True)
class Fault:
    at_ms: int
    kind: FaultKind
    host: str = ""
    hosts: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()  # a partition's other side (empty: every other node)
    direction: Direction = Direction.BOTH
    duration_ms: int = 0  # 0: until the calm (the end of the faults)
    amount_ms: int = 0

    def __str__(self) -> str:
        who = self.host or ",".join(self.hosts)
        if self.peers:
            who += " | " + ",".join(self.peers)
        extra = f" {self.direction}" if self.kind is FaultKind.PARTITION else ""
        more = f" +{self.amount_ms} ms" if self.amount_ms else ""
        dur = f" for {self.duration_ms / 1000:.1f} s" if self.duration_ms else ""
        return f"{self.at_ms / 1000:.1f} s {self.kind} {who}{extra}{more}{dur}".replace("  ", " ")


@dataclass(frozen=True)
class HostSpec:
    name: str
    slots: int  # how many VMs it can run
    fence: bool  # a fence device is configured


@dataclass(frozen=True)
class VmSpec:
    name: str
    host: str  # where it runs at the start
    ha: bool
    priority: int = 0


@dataclass(frozen=True)
class Timings:
    """How the simulated world behaves (ms). Membership views change ``token`` after the
    network does, per host (the skew the engine's margin covers)."""

    step: int = 100
    report_every: int = 1000
    round_every: int = 500  # the engine's HA round
    quorum_check_every: int = 500
    net_delay: tuple[int, int] = (2, 80)
    token: tuple[int, int] = (1000, 2000)
    vm_start: tuple[int, int] = (300, 1500)
    fence_run: tuple[int, int] = (500, 3000)
    fence_slow: tuple[int, int] = (5000, 9000)
    agent_boot: tuple[int, int] = (1000, 3000)  # power-on to agent (and corosync) up
    start_timeout: int = 5000  # the engine stops waiting for a start's answer


@dataclass(frozen=True)
class Scenario:
    seed: int
    hosts: tuple[HostSpec, ...]
    vms: tuple[VmSpec, ...]
    quorum: bool  # a quorum provider (corosync): leases are enforced
    faults: tuple[Fault, ...]
    faults_end_ms: int  # then the calm: links heal, agents restart, devices work
    calm_ms: int = 40_000
    settings: Settings = field(default_factory=Settings)
    timings: Timings = field(default_factory=Timings)
    # The lease's guard also takes a host out of the membership when it self-fences with
    # its agent dead (as a watchdog's reset would; corral.agent.guard does); see docs/ha.md.
    supervisor_leaves: bool = True
    check_liveness: bool = True
    notes: tuple[str, ...] = field(default=())

    @property
    def end_ms(self) -> int:
        return self.faults_end_ms + self.calm_ms

    def without(self, kind: FaultKind) -> Scenario:
        return replace(self, faults=tuple(f for f in self.faults if f.kind is not kind))

    def describe(self) -> str:
        hosts = ", ".join(f"{h.name}({h.slots} slots{', fence' if h.fence else ''})"
                          for h in self.hosts)
        vms = ", ".join(f"{v.name}@{v.host}{' ha' if v.ha else ''}"
                        f"{f' p{v.priority}' if v.priority else ''}" for v in self.vms)
        faults = "; ".join(str(f) for f in self.faults) or "none"
        return (f"hosts {hosts}; quorum provider: {'yes' if self.quorum else 'no'}; "
                f"vms {vms}; faults: {faults}; calm from {self.faults_end_ms / 1000:.1f} s")


def cluster(seed: int, rng: random.Random, n: int | None = None) -> tuple[
        tuple[HostSpec, ...], tuple[VmSpec, ...], bool]:
    """Hosts, VMs and whether there is a quorum provider (never with 2 hosts: corosync's
    two_node leaves both halves of a partition quorate, so 2 hosts rely on fencing)."""
    n = n or rng.randint(2, 5)
    fenced = rng.choice((0.0, 0.0, 0.5, 0.5, 0.5, 1.0))  # share of hosts with a device
    hosts = tuple(HostSpec(f"h{i + 1}", rng.randint(3, 6), rng.random() < fenced)
                  for i in range(n))
    count = rng.randint(2, min(8, sum(h.slots for h in hosts) // 2))
    vms = []
    for i in range(count):
        host = hosts[i % n]
        vms.append(VmSpec(f"vm{i + 1}", host.name, rng.random() < 0.75, rng.randint(0, 3)))
    return hosts, tuple(vms), n >= 3 and rng.random() < 0.75


WEIGHTS = {FaultKind.POWER_OFF: 4, FaultKind.PARTITION: 5, FaultKind.AGENT_CRASH: 2,
           FaultKind.ENGINE_STOP: 2, FaultKind.FENCE_FAIL: 2, FaultKind.FENCE_SLOW: 1,
           FaultKind.HEARTBEAT_DELAY: 2, FaultKind.CLOCK_JUMP: 1, FaultKind.POWER_ON: 2}


def _fault(rng: random.Random, at: int, names: list[str], off: set[str]) -> Fault:
    kinds = [k for k in WEIGHTS if k is not FaultKind.POWER_ON or off]
    kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
    host = rng.choice(sorted(off) if kind is FaultKind.POWER_ON else names)
    dur = rng.choice((0, rng.randint(500, 4000), rng.randint(4000, 25_000)))
    if kind is FaultKind.POWER_OFF:
        off.add(host)
    elif kind is FaultKind.POWER_ON:
        off.discard(host)
    if kind is FaultKind.PARTITION:
        size = rng.choice((1, 1, rng.randint(1, len(names))))
        side = tuple(sorted(rng.sample([*names, ENGINE], size)))
        rest = [n for n in [*names, ENGINE] if n not in side]
        peers = tuple(sorted(rng.sample(rest, rng.randint(1, len(rest))))) \
            if rng.random() < 0.3 else ()
        direction = rng.choice((Direction.BOTH, Direction.BOTH, Direction.OUT, Direction.IN))
        return Fault(at, kind, hosts=side, peers=peers, direction=direction, duration_ms=dur)
    if kind is FaultKind.ENGINE_STOP:
        return Fault(at, kind, duration_ms=rng.choice((rng.randint(500, 5000),
                                                       rng.randint(5000, 70_000))))
    if kind is FaultKind.HEARTBEAT_DELAY:
        return Fault(at, kind, host, duration_ms=dur or 5000, amount_ms=rng.randint(200, 4000))
    if kind is FaultKind.CLOCK_JUMP:
        return Fault(at, kind, rng.choice(["", *names]),
                     amount_ms=rng.choice((-1, 1)) * rng.randint(1000, 3_600_000))
    return Fault(at, kind, host, duration_ms=dur)


def generate(seed: int) -> Scenario:
    """A random scenario: 2-5 hosts, 2-8 VMs (most HA), 1-4 faults (sometimes two at the
    same moment) over 5-40 s, then a calm of 40 s in which every HA VM must run again."""
    rng = random.Random(seed)
    hosts, vms, quorum = cluster(seed, rng)
    names = [h.name for h in hosts]
    faults_end = rng.randint(8, 45) * 1000
    faults: list[Fault] = []
    off: set[str] = set()
    times = sorted(rng.randint(10, faults_end // 100 - 1) * 100 for _ in range(rng.randint(1, 4)))
    for at in times:
        faults.append(_fault(rng, at, names, off))
        if rng.random() < 0.2:  # two faults at once
            faults.append(_fault(rng, at, names, off))
    return Scenario(seed, hosts, vms, quorum, tuple(faults), faults_end)
