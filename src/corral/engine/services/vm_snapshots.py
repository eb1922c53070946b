"""Snapshots of VMs: libvirt internal snapshots in the VM's qcow2 disk (a tree per VM).

The snapshots themselves live on the host (libvirt + qcow2 hold the truth, no DB rows):
the engine checks the request, then an operation asks the VM's agent
(corral.agent.hypervisor.snapshots) to create, revert to or delete one.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from corral.agent_api.snapshots import SnapshotBody, SnapshotInfo
from corral.api import Operation, VmState
from corral.api.snapshots import Snapshot, SnapshotCreate
from corral.engine.context import EngineContext
from corral.engine.db.models import Vm
from corral.engine.operations import OpContext
from corral.engine.projects import project_of
from corral.engine.services import quotas, vm_roots
from corral.engine.services.vm_lookup import find_vm
from corral.errors import Conflict, NotFound, WrongState
from corral.validation import validate_name, validate_vm_name

_BUSY = {VmState.CREATING, VmState.DELETING}


def _vm(ctx: EngineContext, name: str) -> tuple[str, str, VmState]:
    """(vm id, host id, state) of a VM that is not being created or deleted."""
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        state = VmState(vm.state)
        if state in _BUSY or vm.host_id is None:
            raise WrongState(f"VM {name} is {state.value}: wait for its operation",
                             state=state.value)
        return vm.id, vm.host_id, state


def _snapshots(ctx: EngineContext, host_id: str, vm: str) -> list[SnapshotInfo]:
    return ctx.agent(host_id).snapshots(validate_vm_name(vm, "vm"))


def _to_api(info: SnapshotInfo) -> Snapshot:
    return Snapshot.model_validate(info.model_dump())


def list_snapshots(ctx: EngineContext, vm: str) -> list[Snapshot]:
    _vm_id, host_id, _state = _vm(ctx, vm)
    return [_to_api(r) for r in _snapshots(ctx, host_id, vm)]


def _existing(ctx: EngineContext, host_id: str, vm: str, snap: str) -> Snapshot:
    for r in _snapshots(ctx, host_id, vm):
        if r.name == snap:
            return _to_api(r)
    raise NotFound(f"VM {vm} has no snapshot {snap} (`corral vm snapshot list {vm}`)",
                   field="snapshot")


def create(ctx: EngineContext, vm: str, req: SnapshotCreate) -> Operation:
    vm_id, host_id, state = _vm(ctx, vm)
    root = vm_roots.pool_type(ctx, vm_id)
    if root is not None and root[1] == "rbd":
        raise Conflict(f"VM {vm}'s root disk is an RBD image in pool {root[0]}: snapshots "
                       "are internal qcow2 snapshots, which RBD images do not have (clone it, "
                       "or make a template of it, instead)", field="name", pool=root[0])
    if req.memory and state not in (VmState.RUNNING, VmState.PAUSED):
        raise WrongState(f"VM {vm} is {state.value}: a memory snapshot needs it running "
                         "(take a disk snapshot without --memory)", field="memory",
                         state=state.value)
    if any(r.name == req.name for r in _snapshots(ctx, host_id, vm)):
        raise Conflict(f"VM {vm} already has a snapshot {req.name}", field="name")
    params: dict[str, Any] = {"vm_id": vm_id, "host_id": host_id, "vm": vm,
                              **req.model_dump()}
    _count(ctx, vm_id, +1, project=project_of(vm))  # the quota's reservation
    try:
        return ctx.ops.submit("vm.snapshot.create", {"vms": [vm], "snapshots": [req.name]},
                              params, [f"vm:{vm}"], host_id=host_id)
    except BaseException:
        _count(ctx, vm_id, -1)
        raise


def _count(ctx: EngineContext, vm_id: str, by: int, project: str | None = None) -> None:
    """Change the VM's count of snapshots; with ``project``, within its snapshot quota
    (checked and reserved in one unit of work: concurrent creates never pass it)."""
    with ctx.db.session() as s:
        if project is not None:
            quotas.check(s, project, {"snapshots": by})
        after = Vm.snapshots + by
        s.query(Vm).filter_by(id=vm_id).update(  # never below 0 (snapshots from before 0015)
            {Vm.snapshots: sa.case((after < 0, 0), else_=after)}, synchronize_session=False)


def revert(ctx: EngineContext, vm: str, snap: str) -> Operation:
    validate_name(snap, "snapshot")
    vm_id, host_id, _state = _vm(ctx, vm)
    _existing(ctx, host_id, vm, snap)
    params = {"vm_id": vm_id, "host_id": host_id, "vm": vm, "name": snap}
    return ctx.ops.submit("vm.snapshot.revert", {"vms": [vm], "snapshots": [snap]}, params,
                          [f"vm:{vm}"], host_id=host_id)


def delete(ctx: EngineContext, vm: str, snap: str) -> Operation:
    validate_name(snap, "snapshot")
    vm_id, host_id, _state = _vm(ctx, vm)
    _existing(ctx, host_id, vm, snap)
    params = {"vm_id": vm_id, "host_id": host_id, "vm": vm, "name": snap}
    return ctx.ops.submit("vm.snapshot.delete", {"vms": [vm], "snapshots": [snap]}, params,
                          [f"vm:{vm}"], host_id=host_id)


def _names(p: dict[str, Any]) -> tuple[str, str]:
    """The VM and snapshot of an operation, checked again: they become the agent's path."""
    return validate_vm_name(p["vm"], "vm"), validate_name(p["name"], "snapshot")


def _execute_create(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    op.progress(10, "saving disk and memory" if p["memory"] else "saving disk")
    vm, name = _names(p)
    body = SnapshotBody(name=name, memory=p["memory"], quiesce=p["quiesce"],
                        description=p["description"])
    ctx.agent(p["host_id"]).create_snapshot(vm, body)
    op.progress(100, f"snapshot {p['name']} of {p['vm']} taken")


def _execute_revert(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    op.progress(10, f"reverting to {p['name']}")
    info = ctx.agent(p["host_id"]).revert_snapshot(*_names(p))
    state = VmState(info.state)
    desired = {VmState.RUNNING: "running", VmState.PAUSED: "paused"}.get(state, "stopped")
    with ctx.db.session() as s:
        row = s.get(Vm, p["vm_id"])
        if row is not None:
            row.state, row.desired_power = state.value, desired
    ctx.bus.publish("vm", {"name": p["vm"], "state": state.value})
    op.progress(100, f"{p['vm']} reverted to {p['name']}: {state.value}")


def _execute_delete(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    ctx.agent(p["host_id"]).delete_snapshot(*_names(p))
    _count(ctx, p["vm_id"], -1)


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.snapshot.create", lambda op: _execute_create(ctx, op),
                     undo=lambda op: _count(ctx, op.params["vm_id"], -1),
                     failed=lambda op: _count(ctx, op.params["vm_id"], -1))
    ctx.ops.register("vm.snapshot.revert", lambda op: _execute_revert(ctx, op))
    ctx.ops.register("vm.snapshot.delete", lambda op: _execute_delete(ctx, op))
