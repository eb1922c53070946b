"""Which VM moves where to relieve an overloaded host: the balancer's decision, pure.

A host gives a VM away when it stayed above a threshold (CPU or memory) for the whole
window: its mean over the window and over the window's last quarter are both above it, and
its samples cover the window since it last gave or took a VM (so a move is judged on the
load after it, never twice on the load before it). At most one move a round.

Which one: among the host's VMs not in their cool-down, the one that takes off most of the
excess (a VM bigger than the excess helps no more than one just as big; the smaller moves
first), to the target that keeps the most room. A target must be eligible, watched for a
whole window itself, and stay ``margin`` below every threshold with the VM (hysteresis):
it never becomes the next host to give the VM back, since the source had it above the
threshold with it. The scheduler's hard rules (room, pools, networks, CPU model, groups,
tags) are the caller's ``fits``, asked last, best candidate first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CPU, MEMORY = "CPU", "memory"


@dataclass(frozen=True)
class Thresholds:
    cpu_percent: float | None  # None: not weighed
    memory_percent: float | None
    margin_percent: float
    window_s: float
    cooldown_s: float


@dataclass(frozen=True)
class HostLoad:
    name: str
    eligible: bool  # up, not in maintenance, nothing evacuating it: may give or take VMs
    cpus: int
    memory_mib: int
    cpu_percent: float | None  # means over the window
    memory_percent: float | None
    recent_cpu_percent: float | None  # means over the window's last quarter
    recent_memory_percent: float | None
    covered: bool  # its samples cover the whole window since its last move


@dataclass(frozen=True)
class VmLoad:
    name: str
    host: str
    cpus_used: float  # CPUs' worth, mean over the window (1.0: one CPU busy)
    memory_mib: int
    movable: bool = True  # running, and no operation of it pending or running
    last_moved: float | None = None  # wall clock of the end of its last migration


@dataclass(frozen=True)
class Move:
    vm: str
    source: str
    target: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    """A move, or None and why nothing moves (``note``; empty when all is well)."""

    move: Move | None
    note: str = ""


Fits = Callable[[str, str], str | None]  # (VM, target) -> why not, or None


def _span(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def excess(h: HostLoad, th: Thresholds) -> dict[str, tuple[float, float]]:
    """{dimension: (mean, threshold)} of each threshold the host stays above."""
    found: dict[str, tuple[float, float]] = {}
    for dim, limit, mean, recent in ((CPU, th.cpu_percent, h.cpu_percent,
                                      h.recent_cpu_percent),
                                     (MEMORY, th.memory_percent, h.memory_percent,
                                      h.recent_memory_percent)):
        if limit is not None and mean is not None and recent is not None and \
                mean > limit and recent > limit:
            found[dim] = (mean, limit)
    return found


def _share(vm: VmLoad, host: HostLoad) -> dict[str, float]:
    """What the VM weighs on ``host``, in percent of it."""
    return {CPU: 100.0 * vm.cpus_used / max(1, host.cpus),
            MEMORY: 100.0 * vm.memory_mib / max(1, host.memory_mib)}


def _after(vm: VmLoad, target: HostLoad, th: Thresholds) -> dict[str, float] | None:
    """The target's load with the VM, where each stays ``margin`` below its threshold;
    None when one would not (or the target's load is unknown)."""
    share = _share(vm, target)
    after: dict[str, float] = {}
    for dim, limit, now in ((CPU, th.cpu_percent, target.cpu_percent),
                            (MEMORY, th.memory_percent, target.memory_percent)):
        if limit is None:
            continue
        if now is None or now + share[dim] > limit - th.margin_percent:
            return None
        after[dim] = now + share[dim]
    return after


@dataclass(frozen=True)
class _Candidate:
    vm: VmLoad
    target: HostLoad
    helps: float
    weight: float
    room: float
    after: dict[str, float]


def _candidates(source: HostLoad, over: dict[str, tuple[float, float]], hosts: list[HostLoad],
                vms: list[VmLoad], th: Thresholds, now: float,
                notes: list[str]) -> list[_Candidate]:
    found: list[_Candidate] = []
    targets = [h for h in hosts if h.name != source.name and h.eligible and h.covered]
    cooling = 0
    for vm in vms:
        if vm.host != source.name or not vm.movable:
            continue
        if vm.last_moved is not None and now - vm.last_moved < th.cooldown_s:
            cooling += 1
            continue
        share = _share(vm, source)
        helps = sum(min(share[d], mean - limit) for d, (mean, limit) in over.items())
        if helps <= 0:
            continue
        for t in targets:
            after = _after(vm, t, th)
            if after is None:
                continue
            room = min([limit - after[d] for d, limit in ((CPU, th.cpu_percent),
                                                          (MEMORY, th.memory_percent))
                        if limit is not None] or [0.0])
            found.append(_Candidate(vm, t, helps, sum(share.values()), room, after))
    if cooling:
        notes.append(f"{cooling} VM(s) in their cool-down")
    found.sort(key=lambda c: (-c.helps, c.weight, -c.room, c.vm.name, c.target.name))
    return found


def _reason(source: HostLoad, over: dict[str, tuple[float, float]], c: _Candidate,
            th: Thresholds) -> str:
    why = ", ".join(f"{d} {mean:.0f}% > {limit:g}%" for d, (mean, limit) in over.items())
    after = ", ".join(f"{d} {v:.0f}%" for d, v in c.after.items())
    return (f"balance: {source.name} {why} for {_span(th.window_s)}; {c.vm.name} to "
            f"{c.target.name} ({after} with it)")


def decide(hosts: list[HostLoad], vms: list[VmLoad], th: Thresholds, now: float,
           fits: Fits) -> Verdict:
    """At most one move: off the host furthest above its thresholds that can give one."""
    overloaded = []
    for h in hosts:
        over = excess(h, th)
        if h.eligible and h.covered and over:
            worst = max(mean - limit for mean, limit in over.values())
            overloaded.append((worst, h, over))
    if not overloaded:
        return Verdict(None)
    overloaded.sort(key=lambda x: (-x[0], x[1].name))
    notes: list[str] = []
    for _worst, source, over in overloaded:
        why = ", ".join(f"{d} {mean:.0f}% > {limit:g}%" for d, (mean, limit) in over.items())
        mine: list[str] = []
        refused: list[str] = []
        for c in _candidates(source, over, hosts, vms, th, now, mine):
            said = fits(c.vm.name, c.target.name)
            if said is None:
                return Verdict(Move(c.vm.name, source.name, c.target.name,
                                    _reason(source, over, c, th)))
            refused.append(f"{c.vm.name} to {c.target.name}: {said}")
        if refused:
            mine.append("refused: " + "; ".join(refused[:3]))
        elif not any("cool-down" in n for n in mine):
            mine.append(f"no host stays {th.margin_percent:g}% below the thresholds with "
                        "one of its VMs")
        notes.append(f"{source.name} {why}: nothing can move ({'; '.join(mine)})")
    return Verdict(None, "; ".join(notes))
