"""The plan of a host's evacuation (`corral host maintenance HOST`, ``--explain``): for every
VM on the host, what happens to it (its evacuation mode and state decide) and where it goes.

Targets come from the scheduler with every hard rule the VM was created with (room, host
tags, pools, networks, CPU model, affinity groups), the evacuated host never a candidate.
The moves planned before count for the next ones (``Cluster.reserve``): two VMs never both
take the last room of one host, and two members of an anti-affinity group never land on
the same host. A running VM that goes live is also put through the checks of a live
migration (its disks, pending settings, the target), a stopped one those of an offline
migration (TPM, snapshots, its disks), so that the plan refuses what the migration itself
would refuse, before anything moves.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.api import VmState
from corral.api.evacuation import (
    EvacuationAction,
    EvacuationMode,
    EvacuationPlan,
    EvacuationStep,
)
from corral.api.migration import VmMigrate
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Vm
from corral.engine.scheduler import Cluster, Request, insufficient
from corral.engine.services import (
    vm_design,
    vm_migration,
    vm_offline_migration,
    vm_scheduling,
)
from corral.errors import CorralError, NotFound

Action = EvacuationAction


@dataclass(frozen=True)
class _Vm:
    """What the plan needs of one VM, read in one unit of work."""

    name: str
    state: str
    mode: EvacuationMode
    local_root: bool  # its root disk is in the host's own storage: copied by a live move
    tpm: bool  # an offline move does not carry a TPM's state (yet)
    target: str | None
    refused: str | None  # why the scheduler found no host


def _read(ctx: EngineContext, host_name: str) -> tuple[Host, list[_Vm]]:
    """The host (404 if none) and its VMs by name, each with a target chosen while the moves
    chosen before it are booked."""
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=host_name).one_or_none()
        if host is None:
            raise NotFound(f"host {host_name} not found (`corral host list`)", field="name")
        s.expunge(host)
        rows = s.query(Vm).filter(Vm.host_id == host.id).order_by(Vm.name).all()
        policy = vm_scheduling.policy(ctx)
        booked: list[tuple[str, Request]] = []
        out: list[_Vm] = []
        for vm in rows:
            mode = EvacuationMode(vm.evacuation or EvacuationMode.AUTO)
            target = refused = None
            if mode is not EvacuationMode.STOP:
                req = vm_scheduling.vm_request(s, vm)
                # Views per VM: a host with no CPU list is judged by this VM's model.
                cluster = Cluster((v for v in vm_scheduling.host_views(s, req)
                                   if v.name != host.name), policy)
                for name, earlier in booked:
                    cluster.reserve(name, earlier)
                placed = cluster.place(req)
                target = placed.chosen
                if target is None:
                    refused = insufficient(placed).message.replace(
                        "no host can take", "no other host can take", 1)
                else:
                    booked.append((target, req))
            out.append(_Vm(vm.name, vm.state, mode, vm_design.root_pool(s, vm) is None,
                           vm_design.hardware_of(vm).tpm, target, refused))
        return host, out


def _step(ctx: EngineContext, status: str, vm: _Vm) -> EvacuationStep:
    def step(action: Action, reason: str | None = None) -> EvacuationStep:
        moves = action in (Action.LIVE, Action.OFFLINE, Action.COLD)
        return EvacuationStep(vm=vm.name, state=vm.state, mode=vm.mode, action=action,
                              target=vm.target if moves else None,
                              copy_storage=moves and vm.local_root, reason=reason)

    if status not in ("up", "maintenance"):  # every move and stop is its agent's work
        return step(Action.BLOCKED, f"its host is {status}: its agent must answer to "
                    "move or stop it")
    running = vm.state == VmState.RUNNING.value
    if vm.mode is EvacuationMode.STOP:
        return step(Action.STOP if running or vm.state == VmState.PAUSED.value
                    else Action.STAY)
    if not running and vm.state != VmState.STOPPED.value:
        return step(Action.BLOCKED, f"it is {vm.state}: only running and stopped VMs move "
                    "(wait for its operation to end, or start or stop it)")
    if vm.target is None:
        return step(Action.BLOCKED, vm.refused)
    if not running:
        try:
            vm_offline_migration.check(ctx, vm.name, VmMigrate(to=vm.target, offline=True))
        except CorralError as exc:
            return step(Action.BLOCKED, exc.message)
        return step(Action.OFFLINE)
    try:
        vm_migration.check(ctx, vm.name, vm.target, copy_storage=vm.local_root)
    except CorralError as exc:
        # The target's refusals, and disks no move carries (a live and an offline move
        # copy the same: a root disk in the host's own storage): a stop would not help.
        if vm.mode is EvacuationMode.MIGRATE or exc.field in ("to", "storage", "host") \
                or vm.tpm:
            return step(Action.BLOCKED, exc.message)
        return step(Action.COLD, f"no live move: {exc.message}")  # auto: stop, move, start
    return step(Action.LIVE)


def _line(st: EvacuationStep) -> str:
    what = {Action.LIVE: f"live migration to {st.target}",
            Action.OFFLINE: f"definition moved to {st.target} (stopped)",
            Action.COLD: f"stopped, moved to {st.target}, started there",
            Action.STOP: "stopped, stays on the host",
            Action.STAY: "stopped already, stays on the host",
            Action.BLOCKED: "cannot move"}[st.action]
    if st.copy_storage:
        what += " (root disk copied)"
    if st.reason:
        what += f": {st.reason}"
    return f"{st.vm} ({st.state}, evacuation {st.mode.value}): {what}"


def plan(ctx: EngineContext, host_name: str, status: str | None = None) -> EvacuationPlan:
    """What ``host maintenance`` would do now; moves nothing. ``status``: the host's state
    to judge by (the evacuation, once it marked the host, judges by the one before)."""
    host, vms = _read(ctx, host_name)
    steps = [_step(ctx, status or host.status, vm) for vm in vms]
    text = [_line(st) for st in steps] or [f"host {host_name} has no VMs: nothing to move"]
    return EvacuationPlan(host=host_name, steps=steps, text=text,
                          blocked=[st.vm for st in steps if st.action is Action.BLOCKED])
