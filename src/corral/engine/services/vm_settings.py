"""Changing a VM: ``PATCH /api/v1/vms/{name}`` and `corral vm set`.

Every setting changes at one of three moments (Proxmox's "pending changes", oVirt's "next
run configuration"):

- live: the description (the row only), the balloon's target (``memory_target``, at most
  the memory the domain has), vCPUs up to the most the running domain can have
  (``hardware.cpu_max`` when it booted) and more memory up to the most it can have
  (``hardware.memory_max`` when it booted, while it has a DIMM slot free): the running
  domain gets them at once. Memory grows by one DIMM of the difference, a whole number of
  128 MiB blocks (what Linux onlines; another step is a 422); the definition holds the new
  total and no DIMM, so the next start boots with all of it;
- next boot: less memory (a DIMM cannot be taken back live) or more than that room, vCPUs
  beyond that, and the hardware a running domain cannot change (CPU model, ``cpu_max``,
  ``memory_max``, topology, boot order, graphics, pinning, guest NUMA, huge pages): the
  domain's definition gets them now, the VM lists them in ``pending`` until it is next
  started;
- only while stopped: firmware, Secure Boot, TPM, machine and cloud-init (409 otherwise).

The rows always hold the settings asked; ``vms.booted`` holds what the running domain was
started with (set when it starts, moved on by live changes), so what is pending is the
difference. Which change can be live is decided against the running domain itself (the
agent's ``resources``), not against the rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from corral.api import Hardware, Operation, VmPatch, VmState
from corral.domainxml import design_dimm
from corral.domainxml.spec import DIMM_STEP_MIB
from corral.engine.context import EngineContext
from corral.engine.db.models import Operation as OperationRow
from corral.engine.db.models import Vm
from corral.engine.operations import OpContext
from corral.engine.services import hosts, vm_cloudinit, vm_design, vm_ha
from corral.engine.services.vm_lookup import find_vm
from corral.errors import CorralError, InvalidInput, NotFound, WrongState

STOPPED_ONLY = ("firmware", "secure_boot", "tpm", "machine")  # hardware fields
CHANGEABLE = frozenset({VmState.STOPPED, VmState.RUNNING, VmState.PAUSED, VmState.CRASHED})
_FIELDS = ("cloud_init", "cpus", "memory", "memory_target", "description", "hardware",
           "evacuation", "ha", "ha_priority", "restart_policy")


@dataclass(frozen=True)
class Settings:
    """The settings of a VM's row that ``vm set`` changes."""

    cpus: int
    memory_mib: int
    memory_target_mib: int | None
    description: str
    hardware: dict[str, Any]
    # The row only (`host maintenance` reads it); None in an operation of an older engine.
    evacuation: str | None = None
    # The row only (HA, corral.engine.services.vm_ha); None in an operation of an older engine.
    ha: bool | None = None
    ha_priority: int | None = None
    restart_policy: str | None = None

    @classmethod
    def of(cls, vm: Vm) -> Settings:
        return cls(cpus=vm.cpus, memory_mib=vm.memory_mib,
                   memory_target_mib=vm.memory_target_mib, description=vm.description or "",
                   hardware=vm_design.hardware_of(vm).model_dump(mode="json"),
                   evacuation=vm.evacuation, ha=vm.ha, ha_priority=vm.ha_priority,
                   restart_policy=vm.restart_policy)

    def write(self, vm: Vm) -> None:
        vm.cpus, vm.memory_mib = self.cpus, self.memory_mib
        vm.memory_target_mib, vm.description = self.memory_target_mib, self.description
        vm.hardware = dict(self.hardware)
        if self.evacuation is not None:
            vm.evacuation = self.evacuation
        if self.ha is not None:
            if not self.ha:
                vm.ha_reason = None  # no longer HA: nothing HA did stands
            vm.ha = self.ha
        if self.ha_priority is not None:
            vm.ha_priority = self.ha_priority
        if self.restart_policy is not None:
            vm.restart_policy = self.restart_policy

    @property
    def balloon_mib(self) -> int:
        return self.memory_target_mib or self.memory_mib


def changed_by(old: Settings, req: VmPatch) -> Settings:
    """The settings once ``req`` is applied to ``old``; InvalidInput (422) naming the field
    for a combination no VM can have."""
    given = req.model_fields_set
    cpus = req.cpus if req.cpus is not None else old.cpus
    memory = req.memory_mib if req.memory_mib is not None else old.memory_mib
    target = req.memory_target_mib if "memory_target" in given else old.memory_target_mib
    if target is not None and target > memory:
        if "memory_target" in given:
            raise InvalidInput(f"memory_target {target} MiB is more than the VM's memory "
                               f"({memory} MiB)", field="memory_target")
        target = None  # memory shrank below the old target: all of the new memory
    if target == memory:
        target = None
    hw = dict(old.hardware)
    if req.hardware is not None:
        hw.update(req.hardware.model_dump(mode="json", exclude_unset=True))
    try:
        hardware = Hardware.model_validate(hw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(str(first["msg"]).removeprefix("Value error, "),
                           field=f"hardware.{where}" if where else "hardware") from None
    vm_design.check_hardware(hardware, cpus, memory)
    description = req.description if req.description is not None else old.description
    evacuation = req.evacuation.value if req.evacuation is not None else old.evacuation
    return Settings(cpus=cpus, memory_mib=memory, memory_target_mib=target,
                    description=description, hardware=hardware.model_dump(mode="json"),
                    evacuation=evacuation,
                    ha=req.ha if req.ha is not None else old.ha,
                    ha_priority=req.ha_priority if req.ha_priority is not None
                    else old.ha_priority,
                    restart_policy=req.restart_policy.value if req.restart_policy is not None
                    else old.restart_policy)


def stopped_only(old: Settings, new: Settings, cloud_init: bool) -> list[str]:
    """The changes (field names) a running VM cannot take, not even at its next boot."""
    out = [f"hardware.{k}" for k in STOPPED_ONLY if old.hardware.get(k) != new.hardware.get(k)]
    return (["cloud_init"] if cloud_init else []) + out


def _memory_room(booted_mib: int, memory_max_mib: int | None, new_mib: int) -> int:
    """MiB of memory a running domain that has ``booted_mib`` (of at most
    ``memory_max_mib``) is to be given live for ``new_mib``; 0: none (at next start)."""
    if memory_max_mib is None or not booted_mib < new_mib <= memory_max_mib:
        return 0
    return new_mib - booted_mib


def _check_memory_step(booted: dict[str, Any], new_mib: int) -> None:
    grow = _memory_room(int(booted.get("memory_mib") or 0),
                        (booted.get("hardware") or {}).get("memory_max"), new_mib)
    if grow % DIMM_STEP_MIB:
        have = new_mib - grow
        raise InvalidInput(
            f"memory grows live in steps of {DIMM_STEP_MIB} MiB (the guest's memory blocks): "
            f"{have} MiB + {grow} MiB is not one; give {have} MiB plus a multiple of "
            f"{DIMM_STEP_MIB} MiB, or stop the VM to give it any size", field="memory")


def _refuse_while_running(name: str, state: str, fields: list[str]) -> None:
    if fields:
        raise WrongState(f"{', '.join(fields)} of VM {name} can only change while it is "
                         f"stopped (it is {state}): stop it first", state=state)


def patch(ctx: EngineContext, name: str, req: VmPatch) -> Operation:
    given = req.model_fields_set & set(_FIELDS)
    if not given:
        raise InvalidInput(f"nothing to change: give one of {', '.join(_FIELDS)}",
                           field="body")
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        state = VmState(vm.state)
        if state not in CHANGEABLE:
            raise WrongState(f"cannot change VM {name}: it is {state.value} (wait until it "
                             "is stopped or running)", state=state.value)
        old = Settings.of(vm)
        new = changed_by(old, req)
        if req.ha:  # it must be able to run on another host
            vm_ha.check_vm(s, vm)
        if vm.host_id is not None:  # a pin list names CPUs the host has (409 otherwise)
            hosts.check_placement(ctx, vm.host_id, Hardware.model_validate(new.hardware),
                                  new.cpus, new.memory_mib, starting=False)
        if state not in (VmState.STOPPED, VmState.CRASHED):
            _refuse_while_running(name, state.value,
                                  stopped_only(old, new, "cloud_init" in given))
            _check_memory_step(vm.booted or vm_design.boot_settings(vm), new.memory_mib)
        params: dict[str, Any] = {"vm_id": vm.id, "settings": asdict(new)}
        if "cloud_init" in given:
            revision = int((vm.cloud_init or {}).get("revision", -1)) + 1
            seed = vm_cloudinit.stored(req.cloud_init, revision)
            if seed is not None:  # what the renderer refuses is a 4xx now, not a failed op
                vm_cloudinit.seed_files(vm.id, vm.name, vm_cloudinit.first_mac(s, vm), seed)
            params["cloud_init"] = seed
        host_id = vm.host_id
    return ctx.ops.submit("vm.update", {"vms": [name]}, params, [f"vm:{name}"],
                          host_id=host_id)


def execute(ctx: EngineContext, op: OpContext) -> None:
    vm_id = op.params["vm_id"]
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None or vm.host_id is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        name, host_id = vm.name, vm.host_id
        old, old_seed, old_booted = Settings.of(vm), vm.cloud_init, vm.booted
    # An operation of an engine before `vm set` carries only cloud-init.
    new = Settings(**op.params["settings"]) if "settings" in op.params else old
    has_seed = "cloud_init" in op.params
    seed = op.params.get("cloud_init")
    agent = ctx.agent(host_id)
    state = str(agent.domain(name).state)
    running = state in ("running", "paused")
    if running:  # it may have been started since the request was taken
        _refuse_while_running(name, state, stopped_only(old, new, has_seed))
    live = agent.resources(name) if running else None
    cpus_live = live is not None and live.vcpus < new.cpus <= live.vcpus_max
    grow = 0  # MiB plugged in as a DIMM (the balloon keeps what it holds: it grows too)
    if live is not None and live.memory_slots_free > 0:
        grow = _memory_room(live.memory_mib, live.memory_max_mib, new.memory_mib)
        grow = 0 if grow % DIMM_STEP_MIB else grow  # refused by patch(); a race: next start
    memory_after = live.memory_mib + grow if live is not None else 0
    balloon_after = live.balloon_mib + grow if live is not None else 0
    # The balloon moves live for a target asked, or back to all the memory the domain has;
    # not to a smaller memory that is only asked for the next boot.
    balloon_live = (live is not None and new.balloon_mib <= memory_after
                    and new.balloon_mib != balloon_after
                    and (new.memory_target_mib is not None or new.memory_mib == memory_after))
    ballooned_from = balloon_after if live is not None else None
    try:
        _store(ctx, vm_id, new, seed if has_seed else old_seed)
        if has_seed and seed is not None:
            op.progress(20, "building the cloud-init seed")
            vm_cloudinit.push_seed(ctx, agent, vm_id)
        op.progress(40, "updating the domain's definition")
        agent.define(name, vm_design.domain_xml(ctx, vm_id)[2])
        if grow:
            op.progress(50, f"plugging in {grow} MiB of memory")
            agent.plug_memory(name, design_dimm(grow).to_xml(), new.memory_mib)
        if balloon_live:
            op.progress(60, f"balloon target {new.balloon_mib} MiB")
            agent.set_memory_target(name, new.balloon_mib)
        if cpus_live:
            op.progress(80, f"plugging in vCPUs: {new.cpus}")
            agent.set_vcpus(name, new.cpus)
    except CorralError:
        _store(ctx, vm_id, old, old_seed)
        with contextlib.suppress(CorralError):
            if balloon_live and ballooned_from is not None:
                agent.set_memory_target(name, ballooned_from)
            if has_seed and old_seed is not None:
                vm_cloudinit.push_seed(ctx, agent, vm_id)
            agent.define(name, vm_design.domain_xml(ctx, vm_id)[2])
            if grow and agent.resources(name).memory_mib == memory_after:
                # a DIMM cannot be taken back live: the domain has it until it stops
                _after_live(ctx, vm_id, old_booted, live, False, False, old, memory_after)
        raise
    if has_seed and seed is None:
        agent.delete_seed(name)
    message = _after_live(ctx, vm_id, old_booted, live, cpus_live, balloon_live, new,
                          memory_after if grow else None)
    if new.ha and not old.ha:  # as at create: its image where it may have to run again
        vm_ha.spread_image(ctx, op, vm_id)
    op.progress(100, message)
    ctx.bus.publish("vm", {"name": name, "state": state, "message": message})


def _store(ctx: EngineContext, vm_id: str, settings: Settings,
           seed: dict[str, Any] | None) -> None:
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is not None:
            settings.write(vm)
            vm.cloud_init = seed


def _after_live(ctx: EngineContext, vm_id: str, booted: dict[str, Any] | None,
                live: Any, cpus_live: bool, balloon_live: bool, new: Settings,
                memory_mib: int | None = None) -> str:
    """Move ``vms.booted`` on by what the running domain took (``memory_mib``: what it has
    once a DIMM went in); what to tell the user."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None:
            return "settings changed"
        if live is not None:
            was = dict(booted or {"cpus": live.vcpus, "memory_mib": live.memory_mib,
                                  "balloon_mib": live.balloon_mib,
                                  "hardware": vm_design.hardware_of(vm).model_dump(mode="json")})
            if cpus_live:
                was["cpus"] = new.cpus
            if memory_mib is not None:
                was["balloon_mib"] = int(was["balloon_mib"]) + memory_mib - int(was["memory_mib"])
                was["memory_mib"] = memory_mib
            if balloon_live:
                was["balloon_mib"] = new.balloon_mib
            vm.booted = was
        later = vm_design.pending(vm)
    done = [w for w, on in ((f"{new.cpus} vCPUs now", cpus_live),
                            (f"{memory_mib} MiB of memory now", memory_mib is not None),
                            (f"balloon at {new.balloon_mib} MiB now", balloon_live)) if on]
    if later:
        done.append(f"at next start: {', '.join(later)}")
    return "; ".join(done) or "settings changed"


def _scrub(ctx: EngineContext, op: OpContext) -> None:
    """Once the operation is over (done, failed, given up or dropped), its parameters keep no
    user-data or password hash: the new seed travels in them only so that an engine restart
    can run the operation again."""
    if op.params.get("cloud_init") is None:
        return
    with ctx.db.session() as s:
        row = s.get(OperationRow, op.id)
        if row is not None and row.params.get("cloud_init") is not None:
            row.params = {**row.params,
                          "cloud_init": vm_cloudinit.scrubbed(row.params["cloud_init"])}


def _run(ctx: EngineContext, op: OpContext) -> None:
    try:
        execute(ctx, op)
    finally:
        _scrub(ctx, op)


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.update", lambda op: _run(ctx, op), undo=lambda op: _scrub(ctx, op),
                     failed=lambda op: _scrub(ctx, op))
