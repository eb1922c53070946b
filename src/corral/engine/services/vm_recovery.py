"""An HA VM started again on another host after its own host was found safe (fenced off, or
its lease lapsed out of quorum: corral.ha.policy): operation ``vm.recover``, lock
``vm:NAME``, submitted by the HA loop (engine/ha_loop.py) in priority order.

The old host cannot run the VM any more, so nothing is copied from it: an HA VM's disks are
all on shared or rbd pools. On the target: the image (what its root overlays), the
cloud-init seed, the definition; then the row names the target (a compare-and-swap from the
old host: a second recovery of the same VM finds it moved and only makes sure it runs), its
ports, and the start. A failure before the switch leaves nothing on the target. The old host
keeps its stale definition until it comes back: the reconciler destroys it there before the
host counts as up (reconciler.clear_moved).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy.orm import Session

from corral.api import Operation as OperationOut
from corral.api import VmState
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host, Vm
from corral.engine.operations import OpContext
from corral.engine.scheduler import place
from corral.engine.services import (
    image_copies,
    rbd_fencing,
    security_groups,
    vm_cloudinit,
    vm_define,
    vm_design,
    vm_scheduling,
)
from corral.errors import Conflict, CorralError, NotFound

log = logging.getLogger(__name__)

TYPE = "vm.recover"


def choose_target(ctx: EngineContext, s: Session, vm: Vm, allowed: list[str]) -> str | None:
    """Where the scheduler puts ``vm`` among ``allowed`` hosts (every hard rule: room,
    affinity, tags, pools, networks), its lost host never; None: none has room now."""
    request = vm_scheduling.vm_request(s, vm)
    views = [v for v in vm_scheduling.host_views(s, request, skip_vm=vm.id)
             if v.name in allowed]
    return place(views, request, vm_scheduling.policy(ctx)).chosen


def submit(ctx: EngineContext, vm_name: str, target: str, lost: str,
           reason: str) -> OperationOut:
    """The recovery of ``vm_name`` onto host ``target`` (its host ``lost`` is safe: ``reason``
    says how it is known); the target judged again as it is recorded (recoveries and
    migrations submitted before count there)."""
    with ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name=vm_name).one()
        host = s.query(Host).filter_by(name=target).one()
        was = s.get(Host, vm.host_id) if vm.host_id else None
        params: dict[str, Any] = {"vm_id": vm.id, "from_id": vm.host_id,
                                  "from": was.name if was else lost,
                                  "target_id": host.id, "reason": reason}

    def still_room(s: Session) -> None:
        row = s.get(Vm, params["vm_id"])
        if row is None or choose_target(ctx, s, row, [target]) != target:
            raise Conflict(f"host {target} has no room for VM {vm_name} any more",
                           field="to")

    return ctx.ops.submit(TYPE, {"vms": [vm_name], "hosts": [target]}, params,
                          [f"vm:{vm_name}"], host_id=host.id,
                          message=f"HA: its host {lost} is lost ({reason})",
                          claim=still_room)


def prereq(ctx: EngineContext, op: OpContext) -> None:
    """Under the lock: the VM is still on its lost host (or moved by an earlier run)."""
    with ctx.db.session() as s:
        vm = s.get(Vm, op.params["vm_id"])
        if vm is None:
            raise NotFound(f"VM {op.params['vm_id']} no longer exists")
        if vm.host_id not in (op.params["from_id"], op.params["target_id"]):
            raise Conflict(f"VM {vm.name} moved to another host meanwhile: not recovered")


def execute(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    vm_id, target_id = p["vm_id"], p["target_id"]
    with ctx.db.session() as s:
        vm, target = s.get(Vm, vm_id), s.get(Host, target_id)
        if vm is None or target is None:
            raise NotFound("the VM or the target of this recovery was removed")
        name, moved, has_seed = vm.name, vm.host_id == target_id, vm.cloud_init is not None
        target_name = target.name
    agent = ctx.agent(target_id)
    if not moved:
        defined = False
        try:
            rbd_fencing.fence_disks(ctx, op, vm_id, target_id)  # its RBD disks' old clients
            op.progress(5, f"preparing {target_name}")
            image_copies.ensure_for_vm(ctx, op, vm_id, span=(5, 40), host_id=target_id)
            if has_seed:
                vm_cloudinit.push_seed(ctx, agent, vm_id)
            op.progress(50, f"defining VM {name} on {target_name}")
            defined = True
            agent.define(name, vm_design.domain_xml(ctx, vm_id, target_id)[2])
            with ctx.db.session() as s:
                if not claims.claim(s, Vm, vm_id, {"host_id": p["from_id"]},
                                    {"host_id": target_id, "state": VmState.STOPPED.value}):
                    raise Conflict(f"VM {name} moved meanwhile: not recovered")
        except Exception:
            if defined:  # the target keeps nothing of a recovery that did not happen
                with contextlib.suppress(CorralError):
                    agent.undefine(name)
            raise
    op.progress(70, f"starting VM {name} on {target_name}")
    security_groups.push_vm(ctx, vm_id)  # its NICs' ports, now on the target
    state = str(agent.domain(name).state)
    if state != "running":
        state = str(agent.act(name, "start").state)
    vm_define.set_fields(ctx, vm_id, state=VmState(state).value)
    said = f"running again on {target_name}"
    if p.get("from"):
        said += f" (its host {p['from']} was lost: {p.get('reason')})"
    op.progress(99, said)
    ctx.bus.publish("vm", {"name": name, "state": state, "event": "recovered",
                           "from": p.get("from"), "to": target_name, "operation": op.id})


def register(ctx: EngineContext) -> None:
    ctx.ops.register(TYPE, lambda op: execute(ctx, op), prereq=lambda op: prereq(ctx, op))
