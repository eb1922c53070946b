"""The reconciler: acts on what agents report, and closes the gap between the database and
the hosts.

Agents push (corral.agent.reporter): a heartbeat every interval with a digest of their
domains, and a report at once when a domain's lifecycle changes. Here:
- a report keeps its host ``up`` (or makes it up again); a host whose reports stop for
  ``heartbeat_timeout_s`` becomes ``unresponsive`` (HA fences on that, so only silence
  counts, never an error or one slow answer);
- lifecycle events are published at once, and a host whose digest disagrees with the
  engine's rows (or whose agent restarted, or reported events) is resynced: its domains
  are listed and each VM's row brought in line, by a worker, one host at a time as reports
  ask — there is no loop over hosts;
- resync of one VM: a domain that vanished is defined again (and started if it should
  run); a guest powered off from inside is taken as stopped (the user's intent), but an HA
  VM that went down unasked is restarted in place (engine/services/vm_restart.py).
VMs with an operation in progress are left alone: their operation owns them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.agent_api.domains import DomainInfo
from corral.agent_api.reports import (
    HostReport,
    LeaseState,
    Membership,
    ReportAnswer,
    domains_digest,
)
from corral.api import VmState
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Nic, Operation, Vm, utcnow
from corral.engine.services import (
    cluster_settings,
    ha_corosync,
    host_states,
    host_sync,
    hosts,
    security_groups,
    vm_define,
    vm_design,
    vm_migration,
    vm_recovery,
    vm_restart,
)
from corral.engine.services.host_states import HostAction
from corral.errors import CorralError, WrongState

log = logging.getLogger(__name__)

# VMs being created or deleted: their operation owns them, the reconciler keeps off.
_IN_FLUX = {VmState.CREATING.value, VmState.DELETING.value}
# A guest that stops from one of these states shut itself down (events catch it midway,
# shutting-down, where a poll saw only running).
_GUEST_UP = {VmState.RUNNING.value, VmState.SHUTTING_DOWN.value}
LAST_SEEN_EVERY_S = 10.0  # how often a heartbeat is written to the database (hosts.last_seen)
# A host reporting from these is coming back after HA found it safe and may have started its
# VMs elsewhere (ha_loop: fenced): stale copies go before it is up.
_BACK_FROM = {"down"}
# A disagreement a resync did not mend (a VM whose operation holds it, an agent error) is
# tried again this often, not at every heartbeat.
RESYNC_AGAIN_S = 30.0


@dataclass
class _Heartbeat:
    """The last report of a host (clock time), and what it said."""

    at: float
    boot_id: str = ""
    digest: str = ""
    resynced_for: tuple[str, str] = ("", "")  # (host digest, engine digest) of the last resync
    resynced_at: float = float("-inf")
    written: float = float("-inf")  # when last_seen was last written
    # HA: its quorum provider's view and its guard's lease, as its last report said
    membership: Membership | None = None
    lease: LeaseState | None = None


@dataclass(frozen=True)
class HaHeard:
    """What HA needs of a host's last report (engine/ha_loop.py)."""

    at: float
    membership: Membership | None
    lease: LeaseState | None


class Reconciler:
    """``clock``: monotonic seconds; tests pass their own and call ``check_heartbeats`` and
    ``drain`` instead of starting the threads."""

    def __init__(self, ctx: EngineContext, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self._clock = clock
        self._beats: dict[str, _Heartbeat] = {}
        self._beats_lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._monitor, name="host-monitor", daemon=True),
                         threading.Thread(target=self._worker, name="reconciler", daemon=True)]
        self._started = self._clock()

    def start(self) -> None:
        with self.ctx.db.session() as s:  # what changed while the engine was away
            for host_id, in s.query(Host.id):
                self.resync(host_id)
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put("")  # wakes the worker
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=10)

    # -- reports ---------------------------------------------------------------------------
    def report(self, host_id: str, report: HostReport) -> ReportAnswer:
        """A host's report (its agent, over mutual TLS): it is alive; resync it if its
        domains disagree with the rows, or it restarted, or something happened."""
        now = self._clock()
        self.ctx.loads.record(host_id, report)  # the balancer weighs hosts by these
        with self._beats_lock:
            beat = self._beats.get(host_id)
            restarted = beat is None or beat.boot_id != report.boot_id
            if beat is None:
                beat = self._beats[host_id] = _Heartbeat(at=now)
            beat.at, beat.boot_id, beat.digest = now, report.boot_id, report.digest
            beat.membership, beat.lease = report.membership, report.lease
            write_seen = now - beat.written >= LAST_SEEN_EVERY_S
            if write_seen:
                beat.written = now
        if self._coming_back(host_id):
            # Before it counts as up: what it still holds of VMs that run elsewhere now
            # (recovered by HA while it was gone) is destroyed there. Not done: it stays
            # out of use, and its next report tries again.
            try:
                self.clear_moved(host_id)
            except Exception as exc:  # any failure keeps it out of use
                log.warning("host %s is back, but its stale domains stay: %s", host_id, exc)
                with self.ctx.db.session() as s:
                    host = s.get(Host, host_id)
                    return ReportAnswer(host=host.name if host else host_id,
                                        status=host.status if host else "removed",
                                        **self._lease_terms(host_id))
        name, status, back = self._host_status(host_id, HostAction.ANSWERED,
                                               "its agent reports", write_seen=write_seen)
        # Back after a silence (cut off, not restarted): what changed meanwhile reaches it too.
        restarted = restarted or back
        for ev in report.events:
            self.ctx.bus.publish("domain", {"host": name, "name": ev.name, "event": ev.event,
                                            "detail": ev.detail, "state": ev.state})
        ours = self.engine_digest(host_id)
        with self._beats_lock:
            tried = (report.digest, ours) == beat.resynced_for and \
                now - beat.resynced_at < RESYNC_AGAIN_S
            stale = report.digest != ours and not tried
            if restarted or report.events or stale:
                beat.resynced_for, beat.resynced_at = (report.digest, ours), now
        if restarted or report.events or stale:
            self.resync(host_id, refresh_facts=restarted)
        return ReportAnswer(host=name, status=status, **self._lease_terms(host_id))

    def _lease_terms(self, host_id: str) -> dict[str, float | bool | str | None]:
        """The lease this answer renews (from the report's send time, on the host): how
        long, and armed while the host holds an HA VM's row (its guard kills QEMUs only
        then); and the digest of the cluster's corosync files."""
        with self.ctx.db.session() as s:
            armed = s.query(Vm.id).filter(Vm.host_id == host_id, Vm.ha.is_(True)) \
                .first() is not None
        lease_s = cluster_settings.get(self.ctx, "ha.lease_s")
        return {"lease_s": float(lease_s) if isinstance(lease_s, int | float) else 10.0,
                "arm_lease": armed, "corosync_digest": ha_corosync.digest(self.ctx)}

    def clock(self) -> float:
        return self._clock()

    def ha_heard(self, host_id: str) -> HaHeard | None:
        """The host's last report as HA needs it; None before its first."""
        with self._beats_lock:
            beat = self._beats.get(host_id)
            return None if beat is None else HaHeard(beat.at, beat.membership, beat.lease)

    def last_heard(self, host_id: str) -> float:
        """When the host last reported (this clock); the engine's start if not since."""
        with self._beats_lock:
            beat = self._beats.get(host_id)
            return beat.at if beat is not None else self._started

    def _coming_back(self, host_id: str) -> bool:
        """It reports from ``down`` and HA has recovered VMs of it elsewhere."""
        with self.ctx.db.session() as s:
            host = s.get(Host, host_id)
            if host is None or host.status not in _BACK_FROM:
                return False
            return any(isinstance(p, dict) and p.get("from_id") == host_id
                       for (p,) in s.query(Operation.params).filter(
                           Operation.type == vm_recovery.TYPE))

    def clear_moved(self, host_id: str) -> list[str]:
        """Destroy and undefine on the host every domain of a VM whose row names another
        host (HA started it there while this one was fenced or cut off); the names. Disks
        stay: they are the VM's, on shared storage. A VM a migration is moving is left to
        it."""
        ctx = self.ctx
        agent = ctx.agent(host_id)
        reported = {d.vm_id: str(d.state) for d in agent.domains() if d.vm_id}
        if not reported:
            return []
        with ctx.db.session() as s:
            moving = vm_migration.in_flight(s)
            stale = [(v.name, reported[v.id], [n.mac for n in s.query(Nic).filter_by(vm_id=v.id)])
                     for v in s.query(Vm).filter(Vm.id.in_(list(reported)))
                     if v.host_id not in (None, host_id) and v.name not in moving]
        for name, state, macs in stale:
            if state != "stopped":
                with contextlib.suppress(WrongState):
                    agent.act(name, "destroy")
            agent.undefine(name)
            with contextlib.suppress(CorralError):
                agent.delete_seed(name)
            security_groups.drop_ports_of(agent, macs)
            ctx.bus.publish("vm", {"name": name, "event": "stale-copy-removed",
                                   "message": "its old host came back: the copy it still "
                                              "had there was destroyed (it runs elsewhere)"})
        return [name for name, _, _ in stale]

    def engine_digest(self, host_id: str) -> str:
        with self.ctx.db.session() as s:
            rows = s.query(Vm.id, Vm.state).filter(Vm.host_id == host_id,
                                                    Vm.state.notin_(_IN_FLUX)).all()
        return domains_digest((vm_id, state) for vm_id, state in rows)

    def check_heartbeats(self) -> None:
        """Every host that is up and has not reported for the timeout becomes unresponsive.
        A host never heard from since the engine started counts from the start."""
        timeout = self.ctx.settings.heartbeat_timeout_s
        now = self._clock()
        with self.ctx.db.session() as s:
            up = [h.id for h in s.query(Host).filter_by(status="up")]
        for host_id in up:
            with self._beats_lock:
                beat = self._beats.get(host_id)
                last = beat.at if beat is not None else self._started
            silent = now - last
            if silent >= timeout:
                self._host_status(host_id, HostAction.LOST,
                                  f"no heartbeat for {silent:.1f} s (timeout {timeout:g} s)")

    def _monitor(self) -> None:
        tick = min(0.5, self.ctx.settings.heartbeat_timeout_s / 4)
        while not self._stop.wait(tick):
            try:
                self.check_heartbeats()
            except Exception:  # keep watching whatever one check hit
                log.exception("heartbeat check failed")

    # -- resync ----------------------------------------------------------------------------
    def resync(self, host_id: str, refresh_facts: bool = False) -> None:
        """Queue a resync of the host (once, however often asked before it runs)."""
        key = f"{host_id}+facts" if refresh_facts else host_id
        with self._beats_lock:
            if key in self._queued:
                return
            self._queued.add(key)
        self._queue.put(key)

    def drain(self) -> None:
        """Run every queued resync now, on this thread (tests)."""
        while True:
            try:
                key = self._queue.get_nowait()
            except queue.Empty:
                return
            self._run(key)

    def _worker(self) -> None:
        while not self._stop.is_set():
            key = self._queue.get()
            if key:
                self._run(key)

    def _run(self, key: str) -> None:
        with self._beats_lock:
            self._queued.discard(key)
        host_id, _, facts = key.partition("+")
        try:
            if facts:  # a restarted agent (a new version, a host that booted again)
                try:
                    hosts.refresh_facts(self.ctx, host_id)
                except Exception:
                    self._forget_boot(host_id)
                    raise
                # A host that just joined or restarted gets the cluster's networks, pools
                # and ports before its VMs are resynced (they may need them to start).
                host_sync.catch_up(self.ctx, host_id)
            self.resync_host(host_id)
        except CorralError as exc:
            log.warning("resync of host %s: %s", host_id, exc)
        except Exception:  # keep reconciling whatever one host hit
            log.exception("resync of host %s failed", host_id)

    def _forget_boot(self, host_id: str) -> None:
        """The facts of a restarted agent could not be read (a new agent reports before its
        own server listens): its next report counts as a restart again, and retries."""
        with self._beats_lock:
            beat = self._beats.get(host_id)
            if beat is not None:
                beat.boot_id = ""

    def resync_host(self, host_id: str) -> None:
        """List the host's domains and bring each VM's row in line (now, on this thread)."""
        ctx = self.ctx
        reported = ctx.agent(host_id).domains()
        by_id = {d.vm_id: d for d in reported if d.vm_id}
        with ctx.db.session() as s:
            rows = [(v.id, v.name, v.state, v.desired_power)
                    for v in s.query(Vm).filter_by(host_id=host_id)]
            # A VM being migrated vanishes here and appears on the target: its migration
            # records that (also one an engine crash interrupted and none runs yet).
            moving = vm_migration.in_flight(s)
        for vm_id, name, state, desired in rows:
            if state in _IN_FLUX or name in moving:
                continue
            with ctx.ops.try_hold([f"vm:{name}"]) as held:  # never waits, never overtakes
                if not held:
                    continue
                try:
                    self._vm(host_id, vm_id, name, state, desired, by_id.get(vm_id))
                except CorralError as exc:
                    log.warning("reconcile VM %s: %s", name, exc)

    def _vm(self, host_id: str, vm_id: str, name: str, state: str, desired: str,
            domain: DomainInfo | None) -> None:
        ctx = self.ctx
        agent = ctx.agent(host_id)
        if domain is None:
            ctx.bus.publish("vm", {"name": name, "state": state,
                                   "message": "domain missing on host: defining it again"})
            agent.define(name, vm_design.domain_xml(ctx, vm_id)[2])
            actual, why = "stopped", ""
            if desired == "running":
                actual = agent.act(name, "start").state
        else:
            actual, why = domain.state, domain.reason
            if actual != state:
                # The listing was taken before we held the lock: an operation may have
                # changed the VM since. Ask again now that nothing else can.
                again = agent.domain(name)
                actual, why = again.state, again.reason
        if desired == "running" and state in _GUEST_UP and actual in vm_restart.DOWN:
            # HA: restarted in place, unless its policy or restart budget says no
            actual = vm_restart.after_stop(ctx, agent, vm_id, name, actual, why)
        fields: dict[str, str] = {"state": VmState(actual).value}
        if desired == "running" and actual == "stopped" and state in _GUEST_UP:
            fields["desired_power"] = "stopped"  # shut down from inside the guest
        vm_define.set_fields(ctx, vm_id, **fields)

    def _host_status(self, host_id: str, action: HostAction, reason: str,
                     write_seen: bool = False) -> tuple[str, str, bool]:
        """(name, status after ``action``, whether it changed); through the state table: a
        host in maintenance stays there when its agent reports."""
        with self.ctx.db.session() as s:
            host = s.get(Host, host_id)
            if host is None:
                return host_id, "removed", False
            before, status = host_states.apply(s, host_id, action)
            changed = before is not status
            if action is HostAction.ANSWERED and (write_seen or changed):
                host.last_seen = utcnow()
            name = host.name
        if changed:
            self.ctx.bus.publish("host", {"name": name, "status": status, "reason": reason})
        return name, str(status), changed
