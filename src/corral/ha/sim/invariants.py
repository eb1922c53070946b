"""The four properties the simulator checks, from the world's truth (never from what the
engine believes):

1. ``two-copies``: no VM's QEMU runs on two powered hosts at once (every step).
2. ``early-restart``: when the engine moves a VM's row to another host, the old host runs no
   QEMU of it (it is off, or stopped it when its lease lapsed) and cannot start one: none is
   starting there nor on its way (a start goes only where the row says, so none can come).
3. ``liveness``: at the end of the calm, every HA VM that can run again runs (exactly where
   its row says) — when its old host is back, or has a fence device, or a quorate majority
   outlives it, and there is room.
4. ``outage-stop``: a host that stayed in the quorate membership with a live agent for a
   lease (and a token's lag) never stops a VM itself: an engine outage, or a cut from the
   engine alone, stops nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.ha.sim.world import SimHost, World


@dataclass
class Violation(Exception):
    invariant: str
    t: int
    message: str

    def __str__(self) -> str:
        return f"{self.invariant} at {self.t / 1000:.1f} s: {self.message}"


class Checker:
    def __init__(self, world: World) -> None:
        self.w = world
        self.dirty = True
        tm, s = world.tm, world.sc.settings
        # how long in quorum (with a live agent) guarantees a renewal inside the lease
        self.kept_ms = int(s.lease_s * 1000) + tm.token[1] + tm.quorum_check_every + tm.step

    def started(self, host: SimHost, vm: str) -> None:
        self.dirty = True

    def two_copies(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        for vm in self.w.ha:
            where = self.w.running_on(vm)
            if len(where) > 1:
                raise Violation("two-copies", self.w.t, f"{vm} runs on {' and '.join(where)}")

    def move(self, vm: str, old: str, new: str) -> None:
        h = self.w.hosts[old]
        why = None
        if h.powered and vm in h.running:
            why = f"{old} still runs it"
        elif self.w.may_start(h, vm):
            why = f"a start of it on {old} is under way"
        if why:
            raise Violation("early-restart", self.w.t, f"{vm} moved from {old} to {new} "
                            f"while {why}")

    def kill(self, h: SimHost, vm: str, cause: str) -> None:
        self.dirty = True
        if cause != "self-fence":
            return
        t = self.w.t
        if h.quorate_since is not None and t - h.quorate_since >= self.kept_ms and \
                h.agent and t - h.agent_since >= self.kept_ms:
            raise Violation("outage-stop", t, f"{h.name} stopped {vm} itself although it has "
                            f"been in the quorate membership with its agent up for "
                            f"{(t - h.quorate_since) / 1000:.1f} s")

    def liveness(self, rows: dict[str, str], wants: dict[str, bool]) -> list[str]:
        """At the end: HA VMs that should run and do not (rows: vm -> host of its row)."""
        w = self.w
        on = [h for h in w.hosts.values() if h.powered]
        free = sum(h.slots for h in on) - sum(1 for vm, host in rows.items()
                                              if wants[vm] and w.hosts[host].powered)
        majority = 2 * len(on) > w.votes
        bad = []
        for vm, host in rows.items():
            if not (w.ha[vm] and wants[vm]):
                continue
            h = w.hosts[host]
            if not h.powered:
                if not (h.fence or (w.sc.quorum and majority)):
                    continue  # nothing can ever tell the engine it is down: it must wait
                if free <= 0:
                    continue
                free -= 1
            where = w.running_on(vm)
            if where != [host] or not w.hosts[host].powered:
                bad.append(f"{vm} (row on {host}) runs on {where or 'no host'}")
        return bad
