"""A designed VM onto its host and back: define (and start) the domain, record the state,
and undo a create that failed. One block for every path that brings a new VM up (create,
clone, OVA import), so each rolls back the same way: no domain, no disk, no row."""

from __future__ import annotations

import contextlib
from typing import Any

from corral.api import VmState
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db.models import Vm
from corral.engine.operations import OpContext
from corral.engine.services import security_groups, vm_design, vm_roots
from corral.errors import CorralError, WrongState

# States a VM starts (boots) from; paused, unknown and the rest resume what was running.
_OFF = frozenset({VmState.STOPPED.value, VmState.CRASHED.value, VmState.CREATING.value})


def set_fields(ctx: EngineContext, vm_id: str, **fields: Any) -> None:
    """Update the VM's row; a state change is published as an event."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None:
            return
        changed = fields.get("state") not in (None, vm.state)
        boots = fields.get("state") == VmState.RUNNING.value and vm.state in _OFF
        for k, v in fields.items():
            setattr(vm, k, v)
        if boots:  # a domain started from its definition: it runs the rows' settings now
            vm.booted = vm_design.boot_settings(vm)
        name, state = vm.name, vm.state
    if changed:
        ctx.bus.publish("vm", {"name": name, "state": state})


def define_and_start(agent: AgentClient, op: OpContext, name: str, xml: str, start: bool,
                     started_at: int = 60) -> VmState:
    """Define the domain and start it if asked; the state it ends in. Raises as the agent
    does: the caller rolls back (``rollback_create``)."""
    op.check_cancelled()
    agent.define(name, xml)
    if not start:
        return VmState.STOPPED
    op.check_cancelled()
    op.progress(started_at, "starting")
    try:
        return VmState(agent.act(name, "start").state)
    except WrongState:  # a resumed operation may find it running already
        state = VmState(agent.domain(name).state)
        if state != VmState.RUNNING:
            raise
        return state


def rollback_create(ctx: EngineContext, agent: AgentClient, vm_id: str, name: str) -> None:
    """Undo a failed create: no domain, no disk, no seed, no ports, no row."""
    with contextlib.suppress(CorralError):
        agent.act(name, "destroy")
    with contextlib.suppress(CorralError):
        agent.undefine(name)
    vm_roots.delete_quietly(ctx, agent, vm_id, name)
    with contextlib.suppress(CorralError):
        agent.delete_seed(name)
    with ctx.db.session() as s:
        security_groups.drop_ports_of(agent, security_groups.vm_groups(s, vm_id)[0])
        vm = s.get(Vm, vm_id)
        if vm is not None:
            s.delete(vm)
    ctx.bus.publish("vm", {"name": name, "state": "deleted"})
