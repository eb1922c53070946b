"""The engine's HA loop: every tick, what the engine has heard (the reconciler's heartbeats,
the fence runs, the HA VMs' rows) becomes a ClusterView for the pure decisions
(corral.ha.policy), and the decision is carried out: lost hosts marked unresponsive, fence
runs started (each on a thread of its own: a slow fence device never holds up the others),
and HA VMs whose host is safe recovered on other hosts in priority order
(services/vm_recovery.py: an operation each, the scheduler choosing the host). The last
decision is kept for `corral ha status`.

What the engine knows of fencing lives here, in memory: an engine that restarts fences a
lost host again (an `off` of a host that is off is confirmed at once), which is safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from corral.agent_api.reports import LeaseState, Membership
from corral.api import PowerAction, VmState, VmStatePut
from corral.engine.context import EngineContext
from corral.engine.db.models import ClusterSetting, Host, Operation, Vm
from corral.engine.oprows import ACTIVE
from corral.engine.services import cluster_settings, host_states, networks, vm_recovery, vms
from corral.engine.services.host_states import HostAction
from corral.engine.ticker import Ticker
from corral.errors import Conflict, CorralError
from corral.ha import membership, policy
from corral.ha.model import ClusterView, Decision, Fence, HostView, Settings, VmView

log = logging.getLogger(__name__)

TICK_S = 0.25
RETRY_S = 10.0  # a failed recovery of a VM is submitted again after this
_OWNED_BY = ("vm.recover", "vm.migrate")  # operations that own a VM's whereabouts


class Heard(Protocol):
    """A host's last report as HA needs it (reconciler.HaHeard)."""

    @property
    def at(self) -> float: ...
    @property
    def membership(self) -> Membership | None: ...
    @property
    def lease(self) -> LeaseState | None: ...


class Fencer(Protocol):
    """Power fencing as the loop needs it (services/fencing.py; tests pass their own)."""

    def configured(self, host_id: str) -> bool: ...

    def fence_off(self, host_id: str) -> tuple[bool, str]:
        """(confirmed off, what was done or why not)."""
        ...


class FenceAgents:
    """The hosts' fence methods (`corral host fence set`), run through fence agents."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx

    def configured(self, host_id: str) -> bool:
        from corral.engine.services import fencing
        return fencing.configured(self.ctx, host_id)

    def fence_off(self, host_id: str) -> tuple[bool, str]:
        from corral.engine.services import fencing
        out = fencing.fence_off(self.ctx, host_id)
        return out.confirmed, (f"{out.method}: {out.detail}" if out.method else out.detail)


@dataclass(frozen=True)
class _FenceRun:
    status: Fence
    at: float
    reason: str = ""


@dataclass(frozen=True)
class Round:
    """One round as `corral ha status` shows it."""

    view: ClusterView
    decision: Decision
    host_names: dict[str, str]  # host id → name
    vm_hosts: dict[str, str | None]  # VM → where its row says it is
    leases: dict[str, LeaseState | None]  # host name → its lease, as it last reported it


def settings(ctx: EngineContext) -> Settings:
    with ctx.db.session() as s:
        rows = {r.key: r.value for r in s.query(ClusterSetting)
                .filter(ClusterSetting.key.like("ha.%"))}

    def value(key: str) -> float:
        got = rows.get(key, cluster_settings.SETTINGS[key].default)
        return float(got) if isinstance(got, int | float) else 0.0

    return Settings(detect_s=value("ha.detect_s"), lease_s=value("ha.lease_s"),
                    fence_retry_s=value("ha.fence_retry_s"))


class HaLoop(Ticker):
    def __init__(self, ctx: EngineContext, last_heard: Callable[[str], float],
                 clock: Callable[[], float], fencer: Fencer | None = None,
                 heard: Callable[[str], Heard | None] | None = None) -> None:
        super().__init__("ha", TICK_S)
        self.ctx = ctx
        self._last_heard = last_heard
        self._heard = heard or (lambda host_id: None)
        self._clock = clock
        self._standing: dict[str, membership.Standing] = {}  # host name → in/out of quorum
        self._lapsed: dict[str, float] = {}  # host name → its last report, when its lease lapsed
        self.fencer: Fencer = fencer or FenceAgents(ctx)
        self._fence: dict[str, _FenceRun] = {}  # host id → its last fence run
        self._said: dict[str, str] = {}  # VM → the reason it waits, as last published
        self._tried: dict[str, tuple[str, float]] = {}  # VM → (its last recovery, when)
        self._lock = threading.Lock()
        self.last: Round | None = None

    def tick(self) -> None:
        if not self._any_ha():  # an idle engine (no HA VMs) pays one query a tick
            self.last = None
            return
        self.run_round()

    def _any_ha(self) -> bool:
        with self.ctx.db.session() as s:
            return s.query(Vm.id).filter(Vm.ha.is_(True)).first() is not None

    # -- the view ---------------------------------------------------------------------------
    def view(self) -> tuple[ClusterView, dict[str, str], dict[str, str | None],
                            dict[str, LeaseState | None]]:
        """(the view, host id → name, VM → host name, host name → its lease)."""
        now = self._clock()
        ha_settings = settings(self.ctx)
        with self.ctx.db.session() as s:
            hosts = [(h.id, h.name, h.status) for h in s.query(Host)]
            vms = [(v.name, v.host_id, v.ha, v.ha_priority, v.desired_power)
                   for v in s.query(Vm).filter(Vm.ha.is_(True))]
            busy = {name for (res,) in s.query(Operation.resources).filter(
                        Operation.type.in_(_OWNED_BY), Operation.status.in_(ACTIVE))
                    for name in (res or {}).get("vms", [])}
        names = {host_id: name for host_id, name, _ in hosts}
        heard = {name: self._heard(host_id) for host_id, name, _ in hosts}
        standing = self._quorum(now, ha_settings, heard)
        host_views = []
        for host_id, name, status in hosts:
            last = self._last_heard(host_id)
            with self._lock:
                run = self._fence.get(host_id)
                if run is not None and run.status is not Fence.FENCING and last > run.at:
                    del self._fence[host_id]  # it came back since: a fresh start
                    run = None
            got = heard[name]
            lease = got.lease if got is not None else None
            host_views.append(HostView(
                name=name, last_heard=last, maintenance=status == "maintenance",
                fence_configured=self._configured(host_id),
                fence=run.status if run else Fence.NONE, fence_at=run.at if run else 0.0,
                fence_reason=run.reason if run else "", quorum=standing[name].quorum,
                out_since=standing[name].out_since,
                lease_armed=lease is not None and lease.armed))
        vm_views = tuple(VmView(name=name, host=names.get(host_id) if host_id else None,
                                ha=bool(ha), priority=int(prio or 0),
                                wants_running=desired == "running", busy=name in busy)
                         for name, host_id, ha, prio, desired in vms)
        view = ClusterView(now=now, hosts=tuple(host_views), vms=vm_views,
                           settings=ha_settings)
        leases = {name: h.lease if h is not None else None for name, h in heard.items()}
        return view, names, {name: names.get(h) if h else None for name, h, *_ in vms}, leases

    def _quorum(self, now: float, ha_settings: Settings,
                heard: dict[str, Heard | None]) -> dict[str, membership.Standing]:
        """Each host in or out of the quorate membership, from its peers' last reports
        (corral.ha.membership); remembered from round to round for ``out_since``."""
        seen = {name: None if h is None or h.membership is None else
                membership.Seen(h.at, h.membership.quorate, frozenset(h.membership.members))
                for name, h in heard.items()}
        self._standing = membership.derive(now, ha_settings.detect_s, seen, self._standing)
        return self._standing

    def _configured(self, host_id: str) -> bool:
        try:
            return self.fencer.configured(host_id)
        except Exception:  # a broken configuration counts as none: nothing is fenced
            log.exception("reading the fence methods of host %s", host_id)
            return False

    def peek(self) -> Round:
        """The last round, or (before the first) a decision made now and not acted on."""
        last = self.last
        if last is not None:
            return last
        view, names, where, leases = self.view()
        return Round(view, policy.decide(view), names, where, leases)

    # -- a round ----------------------------------------------------------------------------
    def run_round(self) -> Decision:
        view, names, where, leases = self.view()
        d = policy.decide(view)
        ids = {name: host_id for host_id, name in names.items()}
        with_ha = {h for h in where.values() if h}
        for name in d.lost:
            if name in with_ha:  # others: the reconciler's heartbeat timeout says it
                self._mark_lost(ids[name], view, name)
        for name in d.fence:
            self._start_fence(ids[name], name)
        for name, why in d.safe.items():
            host = next(h for h in view.hosts if h.name == name)
            # Its lease lapsed: as good as fenced, once per silence.
            if not policy.fenced(host) and self._lapsed.get(name) != host.last_heard:
                self._lapsed[name] = host.last_heard
                self._fenced(ids[name], name, why)
        self._recover(d)
        self._start_in_place(d)
        self.last = Round(view, d, names, where, leases)
        return d

    def _start_in_place(self, d: Decision) -> None:
        """HA VMs that should run but are stopped on a host that is up again: a fenced host
        that came back before its VMs found room elsewhere (fencing left their rows
        `stopped`). A VM a user stopped wants to stay stopped and is not among them, nor one
        HA's restart budget left down (its desired power is `stopped` then)."""
        with self.ctx.db.session() as s:
            rows = (s.query(Vm.name, Host.name).join(Host, Vm.host_id == Host.id)
                    .filter(Vm.ha.is_(True), Vm.desired_power == "running",
                            Vm.state.in_((VmState.STOPPED.value, VmState.CRASHED.value)),
                            Host.status == "up").all())
            busy = {name for (res,) in s.query(Operation.resources).filter(
                        Operation.status.in_(ACTIVE))
                    for name in (res or {}).get("vms", [])}
        for vm, host in rows:
            if vm in busy or host not in d.targets or self._failed_lately(vm):
                continue
            try:
                op = vms.change_state(self.ctx, vm, VmStatePut(action=PowerAction.START))
                self._tried[vm] = (op.id, self._clock())
                self.ctx.bus.publish("ha", {"vm": vm, "event": "starting", "message":
                                            f"HA VM {vm} should run: started on {host}"})
            except CorralError as exc:
                log.warning("HA: starting VM %s on %s: %s", vm, host, exc)

    def _mark_lost(self, host_id: str, view: ClusterView, name: str) -> None:
        host = next(h for h in view.hosts if h.name == name)
        try:
            host_states.move(self.ctx, host_id, HostAction.LOST,
                             f"no heartbeat for {policy.silent_s(view, host):.1f} s "
                             f"(ha.detect_s {view.settings.detect_s:g} s)")
        except CorralError as exc:
            log.warning("HA: marking host %s lost: %s", name, exc)

    def _start_fence(self, host_id: str, name: str) -> None:
        with self._lock:
            run = self._fence.get(host_id)
            if run is not None and run.status is Fence.FENCING:
                return
            self._fence[host_id] = _FenceRun(Fence.FENCING, self._clock())
        self.ctx.bus.publish("ha", {"host": name, "event": "fencing",
                                    "message": f"fencing host {name}: it is lost and has HA "
                                               "VMs to bring back"})
        threading.Thread(target=self._fence_one, args=(host_id, name), name=f"fence-{name}",
                         daemon=True).start()

    def _fence_one(self, host_id: str, name: str) -> None:
        try:
            confirmed, said = self.fencer.fence_off(host_id)
        except Exception as exc:  # a crashing fence run is a failed one, never a success
            log.exception("fencing host %s", name)
            confirmed, said = False, f"the fence run failed: {exc}"
        with self._lock:
            self._fence[host_id] = _FenceRun(Fence.CONFIRMED if confirmed else Fence.FAILED,
                                             self._clock(), "" if confirmed else said)
        if confirmed:
            self._fenced(host_id, name, said)
        else:
            self.ctx.bus.publish("ha", {"host": name, "event": "fence-failed",
                                        "message": f"fencing host {name} could not confirm it "
                                                   f"off: {said}; its HA VMs stay down"})

    def _fenced(self, host_id: str, name: str, said: str) -> None:
        """Its power is off, or its lease lapsed: its VMs are not running (their rows say so
        now), and the host is `down` until it reports again (the reconciler then clears
        what it still holds of VMs that moved: clear_moved)."""
        try:
            host_states.move(self.ctx, host_id, HostAction.FENCED, f"fenced ({said})")
        except CorralError as exc:
            log.warning("HA: host %s fenced, its state stays: %s", name, exc)
        with self.ctx.db.session() as s:
            for vm in s.query(Vm).filter_by(host_id=host_id):
                if vm.state not in (VmState.CREATING.value, VmState.DELETING.value):
                    vm.state = VmState.STOPPED.value
        networks.move_servers_off(self.ctx, host_id)  # its overlays' gateway and DHCP
        self.ctx.bus.publish("ha", {"host": name, "event": "fenced",
                                    "message": f"host {name} is fenced: {said}"})

    def _recover(self, d: Decision) -> None:
        if not d.recover:
            self._publish_waiting(d.waiting)
            return
        for name in d.recover:
            failed = self._failed_lately(name)
            if failed:
                d.waiting[name] = failed
                continue
            with self.ctx.db.session() as s:
                vm = s.query(Vm).filter_by(name=name).one_or_none()
                was = s.get(Host, vm.host_id) if vm is not None and vm.host_id else None
                if vm is None or was is None:
                    continue
                target = vm_recovery.choose_target(self.ctx, s, vm, d.targets)
                lost = was.name
            no_room = "no host with room for it: it starts when room appears"
            if target is None:
                d.waiting[name] = no_room
                continue
            try:
                op = vm_recovery.submit(self.ctx, name, target, lost,
                                        d.safe.get(lost, "was lost"))
                self._tried[name] = (op.id, self._clock())
            except Conflict:  # the room went to a recovery or migration submitted just before
                d.waiting[name] = no_room
            except CorralError as exc:
                d.waiting[name] = f"its recovery was refused: {exc}"
        self._publish_waiting(d.waiting)

    def _failed_lately(self, vm: str) -> str | None:
        """Why the VM's last recovery failed, while it is too soon to try again."""
        tried = self._tried.get(vm)
        if tried is None:
            return None
        op_id, at = tried
        try:
            op = self.ctx.ops.get(op_id)
        except CorralError:
            return None
        left = RETRY_S - (self._clock() - at)
        if op.status.value != "failure" or left <= 0:
            return None
        return f"its recovery failed: {op.outcome()}; tried again in {left:.0f} s"

    def _publish_waiting(self, waiting: dict[str, str]) -> None:
        """An event each time a VM's reason to wait changes (not every tick)."""
        for name, why in waiting.items():
            if self._said.get(name) != why:
                self._said[name] = why
                self.ctx.bus.publish("ha", {"vm": name, "event": "waiting", "message": why})
        for name in [n for n in self._said if n not in waiting]:
            del self._said[name]
