"""VMs: checks at the edge, then operations whose executors drive the host's agent."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from corral.api import Operation, PowerAction, VmCreate, VmState, VmStatePut
from corral.api import Vm as VmOut
from corral.api.evacuation_mode import EvacuationMode
from corral.api.restart_policy import RestartPolicy
from corral.engine import projects
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host, Image, Network, Nic, StoragePool, Vm, VmGroup
from corral.engine.operations import OpContext
from corral.engine.services import (
    hosts,
    image_copies,
    networks,
    op_undo,
    pools,
    quotas,
    security_groups,
    vm_cloudinit,
    vm_define,
    vm_design,
    vm_ha,
    vm_nics,
    vm_restart,
    vm_roots,
    vm_scheduling,
    vm_settings,
)
from corral.engine.services.vm_lookup import find_vm
from corral.engine.services.vm_states import DESIRED, check_action, check_delete
from corral.errors import (
    Conflict,
    CorralError,
    InvalidInput,
    NotFound,
    WrongState,
)


def to_api(vm: Vm, image: str, first_nic: tuple[str, str] | None, host: str | None,
           pool: str = vm_roots.DEFAULT, group: str | None = None) -> VmOut:
    """``first_nic``: (network, MAC) of the VM's first NIC."""
    network, mac = first_nic or (None, None)
    return VmOut(
        id=vm.id, name=projects.bare_name(vm.name), project=vm.project, image=image,
        cpus=vm.cpus, memory_mib=vm.memory_mib, pool=pool,
        disk_bytes=vm.disk_bytes, network=network, mac=mac, host=host,
        state=VmState(vm.state), desired_power=vm.desired_power, created_at=vm.created_at,
        cloud_init=vm_cloudinit.shown(vm.cloud_init),
        hardware=vm_design.hardware_of(vm), description=vm.description or "",
        memory_target_mib=vm.memory_target_mib, pending=vm_design.pending(vm), group=group,
        evacuation=EvacuationMode(vm.evacuation or EvacuationMode.AUTO),
        ha=bool(vm.ha), ha_priority=vm.ha_priority or 0,
        restart_policy=RestartPolicy(vm.restart_policy or RestartPolicy.ALWAYS),
        ha_reason=vm.ha_reason,
    )


def _out(s: Any, vm: Vm) -> VmOut:
    image = s.get(Image, vm.image_id)
    first = vm_nics.first_nic(s, vm.id)
    host = s.get(Host, vm.host_id) if vm.host_id else None
    root = vm_design.root_pool(s, vm)
    nic = (first[1].name, first[0].mac) if first else None
    group = s.get(VmGroup, vm.group_id) if vm.group_id else None
    return to_api(vm, image.name if image else "?", nic,
                  host.name if host else None, root.name if root else vm_roots.DEFAULT,
                  group.name if group else None)


def list_vms(ctx: EngineContext, in_projects: list[str] | None = None) -> list[VmOut]:
    """The VMs of ``in_projects`` (None: all), by project and name."""
    with ctx.db.session() as s:
        # Plain rows, not ORM objects: to_api reads their columns only, and a thousand
        # mapped instances cost more than the query (bench/api_projects.py).
        table: Any = Vm.__table__
        q = sa.select(table).order_by(table.c.project, table.c.name)
        if in_projects is not None:
            q = q.where(table.c.project.in_(in_projects))
        rows: list[Any] = list(s.execute(q).all())
        return rows_out(s, rows, None if in_projects is None else Vm.project.in_(in_projects))


def rows_out(s: Any, rows: list[Any], of: sa.ColumnElement[bool] | None) -> list[VmOut]:
    """Plain ``vms`` rows as the API shows them; ``of``: a condition on Vm that holds for
    these rows (their NICs are read with it; None: every VM's)."""
    # The names a VM refers to, read once for the list, not per VM: _out's lookups cost
    # four queries a VM (the identity map holds rows weakly, so even the one image of
    # every VM was read again each time): 1,000 VMs took a second (bench/api_projects.py).
    images = dict(s.query(Image.id, Image.name))
    host_names = dict(s.query(Host.id, Host.name))
    pool_names = dict(s.query(StoragePool.id, StoragePool.name))
    groups = dict(s.query(VmGroup.id, VmGroup.name))
    nics = s.query(Nic.vm_id, Nic.mac, Network.name) \
        .outerjoin(Network, Network.id == Nic.network_id).join(Vm, Vm.id == Nic.vm_id)
    if of is not None:
        nics = nics.filter(of)
    first: dict[str, tuple[str, str] | None] = {}
    for vm_id, mac, network in nics.order_by(Nic.vm_id, Nic.idx):
        if vm_id not in first:  # as vm_nics.first_nic: the lowest idx (None: no network)
            first[vm_id] = (network, mac) if network is not None else None
    return [to_api(vm, images.get(vm.image_id, "?"), first.get(vm.id),
                   host_names.get(vm.host_id) if vm.host_id else None,
                   pool_names.get(vm.root_pool_id, vm_roots.DEFAULT)
                   if vm.root_pool_id else vm_roots.DEFAULT,
                   groups.get(vm.group_id) if vm.group_id else None) for vm in rows]


def get(ctx: EngineContext, name: str) -> VmOut:
    with ctx.db.session() as s:
        return _out(s, find_vm(s, name))


def create(ctx: EngineContext, req: VmCreate, project: str = DEFAULT_PROJECT) -> Operation:
    """Check everything first: a refused request leaves nothing behind. From here on the VM
    is known by its full name (engine/projects.py)."""
    vm_cloudinit.check(req.cloud_init, req.name)  # the guest's hostname: the bare name
    req = req.model_copy(update={"name": projects.full_name(project, req.name)})
    vm_design.check_hardware(req.hardware, req.cpus, req.memory_mib)
    hw = req.hardware
    host_bound = hw.cpu_pin is not None or hw.numa is not None or hw.hugepages is not None
    likely = None
    if host_bound:  # pins on its CPUs, huge pages free (409): asks the likely host's agent now,
        # not while the placement lock is held below
        with ctx.db.session() as s:
            likely = vm_scheduling.choose(ctx, s, req)[0].id
        hosts.check_placement(ctx, likely, hw, req.cpus, req.memory_mib, starting=req.start)
    if (req.image is None) == (req.iso is None):
        raise InvalidInput("give either an image (linked clone) or an iso (install from CD-ROM)",
                           field="image")
    if req.iso is not None and req.disk_bytes is None:
        raise InvalidInput("a VM installed from an ISO needs a disk size (e.g. disk 8G)",
                           field="disk")
    field, image_name = ("iso", req.iso) if req.iso else ("image", req.image)
    _check_root_room(ctx, req, image_name)
    with ctx.db.session() as s:
        # The placement lock, first: what is read next includes every VM placed before, and
        # no other create places until this VM's row (its reservation) is committed.
        claims.serialize(s, Vm)
        if s.query(Vm).filter_by(name=req.name).count():
            raise Conflict(f"VM {req.name} already exists", field="name")
        image = s.query(Image).filter_by(name=image_name).one_or_none()
        if image is None:
            raise NotFound(f"{field} {image_name} not found (`corral image list`)", field=field)
        projects.check_usable(image, project, field)
        claims.hold(s, image)  # an image delete at the same moment sees this VM, or we its mark
        if image.status != "ready":
            raise Conflict(f"image {image_name} is {image.status}, not ready", field=field)
        if (image.format == "iso") != (field == "iso"):
            raise InvalidInput(
                f"image {image_name} is an ISO: install from it with iso (`vm create --iso`)"
                if image.format == "iso" else f"iso {image_name} is a disk image, not an ISO",
                field=field,
            )
        net = s.query(Network).filter_by(name=req.network).one_or_none()
        if net is None:
            raise NotFound(f"network {req.network} not found", field="network")
        projects.check_usable(net, project, "network")
        claims.hold(s, net)  # a delete of the network at the same moment
        networks.check_usable(net)
        groups = security_groups.resolve(s, req.security_groups, net)
        for g in groups:
            projects.check_usable(g, project, "security_groups")
        disk = req.disk_bytes or image.virtual_size
        if image.format != "iso" and disk < image.virtual_size:
            raise Conflict(
                f"disk {disk >> 20} MiB is smaller than image {image.name} "
                f"({image.virtual_size >> 20} MiB)",
                field="disk",
            )
        host, group = vm_scheduling.choose(ctx, s, req)  # the 409 explains a refusal
        if group is not None:
            projects.check_usable(group, project, "group")
        if host_bound and host.id != likely:  # another create took the likely host meanwhile
            hosts.check_placement(ctx, host.id, hw, req.cpus, req.memory_mib, starting=False)
        root_pool_id = vm_roots.pick(s, req.pool, host, image.format == "iso")
        if req.ha:  # it must be able to run on another host
            vm_ha.check_movable(req.name, s.get(StoragePool, root_pool_id)
                                if root_pool_id else None)
        quotas.check_vm(s, project, req.cpus, req.memory_mib, disk)
        vm = Vm(
            name=req.name, project=project, image_id=image.id, host_id=host.id, root_pool_id=root_pool_id,
            cpus=req.cpus, memory_mib=req.memory_mib, disk_bytes=disk,
            desired_power="running" if req.start else "stopped", state=VmState.CREATING.value,
            cloud_init=vm_cloudinit.stored(req.cloud_init),
            hardware=req.hardware.model_dump(mode="json"), description=req.description,
            group_id=group.id if group else None, host_tags=req.host_tags,
            evacuation=req.evacuation.value, ha=req.ha, ha_priority=req.ha_priority,
            restart_policy=req.restart_policy.value,
        )
        s.add(vm)
        with claims.unique(f"VM {req.name} was just taken by a concurrent request",
                           field="name"):
            s.flush()
        first = Nic(vm_id=vm.id, network_id=net.id, mac=vm_nics.new_mac(s), idx=0)
        s.add(first)
        with claims.unique(f"the MAC {first.mac} was just taken by a concurrent request",
                           field="mac"):
            s.flush()
        security_groups.set_groups(s, first.id, groups)
        vm_id = vm.id
    return ctx.ops.submit("vm.create", {"vms": [req.name]}, {"vm_id": vm_id, "start": req.start},
                          [f"vm:{req.name}"], host_id=host.id)


def _check_root_room(ctx: EngineContext, req: VmCreate, image_name: str | None) -> None:
    """The root disk fits in its pool as a volume must (409 otherwise); a name that is not
    found is left to the checks that say so."""
    with ctx.db.session() as s:
        image = s.query(Image).filter_by(name=image_name).one_or_none()
        pool = s.query(StoragePool).filter_by(name=req.pool or pools.DEFAULT_POOL).one_or_none()
        if image is None or pool is None or pool.status != "ready":
            return
        need = req.disk_bytes or (0 if image.format == "iso" else image.virtual_size)
        s.expunge(pool)
    pools.check_room(ctx, pool, need, f"the root disk of VM {req.name}", "disk")


def execute_create(ctx: EngineContext, op: OpContext) -> None:
    vm_id = op.params["vm_id"]
    name, host_id, xml = vm_design.domain_xml(ctx, vm_id)
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        assert vm is not None
        image = s.get(Image, vm.image_id)
        assert image is not None
        # An ISO install gets a blank disk; otherwise a linked clone of the image.
        image_name = None if image.format == "iso" else image.name
        size = vm.disk_bytes
        has_seed = vm.cloud_init is not None
    agent = ctx.agent(host_id)
    try:
        op.check_cancelled()  # safe points: a cancel rolls back like any failure
        image_copies.ensure_for_vm(ctx, op, vm_id)  # a host without the image gets it
        op.progress(10, "creating disk")
        # The NICs' ports (anti-spoofing, groups) need not wait for the disk, only be in
        # place before the domain exists: pushed meanwhile, they cost a create no time.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ports") as pool:
            ports = pool.submit(security_groups.push_vm, ctx, vm_id)
            vm_roots.create(ctx, agent, op, vm_id, image_name, size)
            if has_seed:
                op.progress(20, "building cloud-init seed")
                vm_cloudinit.push_seed(ctx, agent, vm_id)
        ports.result()  # its error, if any, rolls the create back like the others
        op.check_cancelled()
        op.progress(40, "defining domain")
        state = vm_define.define_and_start(agent, op, name, xml,
                                           bool(op.params.get("start")))
    except CorralError:
        vm_define.rollback_create(ctx, agent, vm_id, name)
        raise
    vm_define.set_fields(ctx, vm_id, state=state.value)
    vm_ha.spread_image(ctx, op, vm_id)  # an HA VM's image where it may have to run again


def _check_start(ctx: EngineContext, name: str) -> None:
    """A stopped VM's placement fits its host now (its huge pages free): 409 before the
    start is taken, and again when it runs (the pages may have gone meanwhile)."""
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        if vm.host_id is None or vm.state not in (VmState.STOPPED.value, VmState.CRASHED.value):
            return  # check_action says what is wrong with starting it
        args = (vm.host_id, vm_design.hardware_of(vm), vm.cpus, vm.memory_mib)
    hosts.check_placement(ctx, *args, starting=True)


def change_state(ctx: EngineContext, name: str, req: VmStatePut) -> Operation:
    if req.action == PowerAction.START:
        _check_start(ctx, name)
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        state = VmState(vm.state)
        if not (req.action == PowerAction.STOP and req.force and state == VmState.SHUTTING_DOWN):
            check_action(name, state, req.action)
        was = {"desired_power": vm.desired_power}  # what a cancel before it starts restores
        vm.desired_power = DESIRED[req.action]
        if req.action == PowerAction.START:
            vm_restart.forget(vm)  # the user's start: a fresh HA restart budget
        vm_id, host_id = vm.id, vm.host_id
    params = {"vm_id": vm_id, "action": req.action.value, "force": req.force,
              "timeout": req.timeout, "was": was}
    return ctx.ops.submit(f"vm.{req.action.value}", {"vms": [name]}, params, [f"vm:{name}"],
                          host_id=host_id)


def _wait_state(agent: AgentClient, name: str, want: set[str], timeout: float,
                op: OpContext | None = None) -> str:
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    while True:
        state = str(agent.domain(name).state)
        if state in want or time.monotonic() >= deadline:
            return state
        if op is not None and timeout > 0:
            op.progress(int(90 * (time.monotonic() - start) / timeout), f"waiting: {state}")
        time.sleep(0.2)


def execute_power(ctx: EngineContext, op: OpContext) -> None:
    vm_id, action = op.params["vm_id"], PowerAction(op.params["action"])
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None or vm.host_id is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        name, host_id = vm.name, vm.host_id
    agent = ctx.agent(host_id)
    current = str(agent.domain(name).state)
    if action == PowerAction.START:
        if current != "running":  # idempotent: a resumed operation may find it running
            _check_start(ctx, name)
            name_xml = vm_design.domain_xml(ctx, vm_id)[2]
            security_groups.push_vm(ctx, vm_id)  # its NICs' ports, on this host
            agent.define(name, name_xml)  # the engine's design wins over a drifted domain
            current = agent.act(name, "start").state
    elif action == PowerAction.STOP:
        current = _stop(agent, name, op)
    elif action == PowerAction.REBOOT:
        current = agent.act(name, "reboot").state
    elif action == PowerAction.PAUSE and current != "paused":
        current = agent.act(name, "suspend").state
    elif action == PowerAction.RESUME and current == "paused":
        current = agent.act(name, "resume").state
    vm_define.set_fields(ctx, vm_id, state=VmState(current).value)


def _stop(agent: AgentClient, name: str, op: OpContext) -> str:
    if str(agent.domain(name).state) == "stopped":
        return "stopped"
    if not op.params.get("force"):
        timeout = float(op.params.get("timeout", 60))
        op.progress(5, f"shutdown (guest agent, else ACPI), forcing off after {timeout:g} s")
        with contextlib.suppress(WrongState):  # e.g. paused: fall through to forced off
            agent.act(name, "shutdown")
        if _wait_state(agent, name, {"stopped"}, timeout, op) == "stopped":
            return "stopped"
        op.progress(90, f"guest did not stop within {timeout:g} s: forcing off")
    try:
        return str(agent.act(name, "destroy").state)
    except WrongState:
        return "stopped"


def delete(ctx: EngineContext, name: str, force: bool) -> Operation:
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        claims.hold(s, vm)  # two deletes at once: the second sees the first's "deleting"
        check_delete(name, VmState(vm.state), force)
        was = {"state": vm.state, "desired_power": vm.desired_power}  # for a cancel
        vm.desired_power = "stopped"
        vm.state = VmState.DELETING.value
        vm_id, host_id = vm.id, vm.host_id
        # It pushes the static leases of its networks again: one push per network at a time.
        locks = [f"vm:{name}"] + [f"network:{n}" for n in vm_nics.static_networks(s, vm_id)]
    ctx.bus.publish("vm", {"name": name, "state": VmState.DELETING.value})
    return ctx.ops.submit("vm.delete", {"vms": [name]}, {"vm_id": vm_id, "was": was}, locks,
                          host_id=host_id)


def execute_delete(ctx: EngineContext, op: OpContext) -> None:
    with ctx.db.session() as s:
        vm = s.get(Vm, op.params["vm_id"])
        if vm is None:
            return
        name, host_id = vm.name, vm.host_id
    if host_id is not None:
        agent = ctx.agent(host_id)
        with contextlib.suppress(WrongState, NotFound):
            agent.act(name, "destroy")
        op.progress(50, "removing domain and disk")
        agent.undefine(name)
        vm_roots.delete(ctx, agent, op.params["vm_id"], name)
        agent.delete_seed(name)
    changed: list[str] = []
    with ctx.db.session() as s:
        macs, sg_ids = security_groups.vm_groups(s, op.params["vm_id"])
    with ctx.db.session() as s:
        vm = s.get(Vm, op.params["vm_id"])
        if vm is not None:
            changed = vm_nics.forget_vm(s, vm.id)  # its NICs, and their static leases
            s.delete(vm)
    for net_id in changed:
        with contextlib.suppress(CorralError):  # a host that is down gets them at repair
            vm_nics.push_reservations(ctx, net_id)
    security_groups.after_vm_deleted(ctx, host_id, macs, sg_ids)  # ports, remote groups
    ctx.bus.publish("vm", {"name": name, "state": "deleted"})


def console_log(ctx: EngineContext, name: str) -> str:
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        host_id = vm.host_id
    if host_id is None:
        return ""
    return ctx.agent(host_id).console_log(name)


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.create", lambda op: execute_create(ctx, op), may_cancel=True,
                     undo=op_undo.delete_row(ctx, Vm, "vm_id", event="vm", field="state"))
    # A failed delete leaves the VM in error: deletable again, never started by the
    # reconciler (its desired power is already "stopped").
    ctx.ops.register("vm.delete", lambda op: execute_delete(ctx, op),
                     undo=op_undo.restore(ctx, Vm, "vm_id"),
                     failed=op_undo.set_fields(ctx, Vm, "vm_id", state=VmState.ERROR.value))
    vm_settings.register(ctx)
    for action in PowerAction:
        ctx.ops.register(f"vm.{action.value}", lambda op: execute_power(ctx, op),
                         undo=op_undo.restore(ctx, Vm, "vm_id"))
