"""The reconciler: compares desired state (DB) with what agents report, and closes the gap.

Each pass, for every host that is up:
- records each VM's actual state (and publishes an event when it changes);
- a VM whose domain vanished from its host is defined again (and started if it should run);
- a VM that should run but was powered off from inside the guest is taken as stopped:
  the guest's own shutdown is the user's intent, not a failure to undo;
- a host whose agent does not answer becomes ``unresponsive`` (HA builds on this later).
VMs with an operation in progress are left alone: their operation owns them.
"""

from __future__ import annotations

import logging
import threading

from corral.api import VmState
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Vm, utcnow
from corral.engine.services import vms as vm_service
from corral.errors import CorralError

log = logging.getLogger(__name__)

_SETTLED = {VmState.CREATING.value, VmState.DELETING.value}


class Reconciler:
    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.ctx.settings.reconcile_interval):
            try:
                self.run_once()
            except Exception:  # keep reconciling whatever one pass hit
                log.exception("reconcile pass failed")

    def run_once(self) -> None:
        with self.ctx.db.session() as s:
            host_ids = [h.id for h in s.query(Host)]
        for host_id in host_ids:
            self._host(host_id)

    def _host(self, host_id: str) -> None:
        ctx = self.ctx
        try:
            reported = ctx.agent(host_id).domains()
        except CorralError as exc:
            self._host_status(host_id, "unresponsive", str(exc))
            return
        self._host_status(host_id, "up", None)
        by_id = {d["vm_id"]: d for d in reported if d.get("vm_id")}
        with ctx.db.session() as s:
            rows = [(v.id, v.name, v.state, v.desired_power)
                    for v in s.query(Vm).filter_by(host_id=host_id)]
        for vm_id, name, state, desired in rows:
            if state in _SETTLED:
                continue
            lock = ctx.ops.lock(f"vm:{name}")
            if not lock.acquire(blocking=False):
                continue
            try:
                self._vm(host_id, vm_id, name, state, desired, by_id.get(vm_id))
            except CorralError as exc:
                log.warning("reconcile VM %s: %s", name, exc)
            finally:
                lock.release()

    def _vm(self, host_id: str, vm_id: str, name: str, state: str, desired: str,
            domain: dict[str, str] | None) -> None:
        ctx = self.ctx
        agent = ctx.agent(host_id)
        if domain is None:
            ctx.bus.publish("vm", {"name": name, "state": state,
                                   "message": "domain missing on host: defining it again"})
            agent.define(name, vm_service.domain_xml(ctx, vm_id)[2])
            actual = "stopped"
            if desired == "running":
                actual = agent.act(name, "start")["state"]
        else:
            actual = domain["state"]
            if actual != state:
                # The listing was taken before we held the lock: an operation may have
                # changed the VM since. Ask again now that nothing else can.
                actual = agent.domain(name)["state"]
        fields: dict[str, str] = {"state": VmState(actual).value}
        if desired == "running" and actual == "stopped" and state == "running":
            fields["desired_power"] = "stopped"  # shut down from inside the guest
        vm_service._set(ctx, vm_id, **fields)

    def _host_status(self, host_id: str, status: str, reason: str | None) -> None:
        with self.ctx.db.session() as s:
            host = s.get(Host, host_id)
            if host is None:
                return
            changed = host.status != status
            host.status = status
            if status == "up":
                host.last_seen = utcnow()
            name = host.name
        if changed:
            self.ctx.bus.publish("host", {"name": name, "status": status, "reason": reason})
