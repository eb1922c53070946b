"""Growing a VM's root disk: ``corral vm disk resize NAME root --size 20G``.

A running or paused VM's disk grows through QEMU (block resize: the guest sees the new size
at once, as with attached volumes); a stopped one's on its host, with ``qemu-img resize`` on
its qcow2 file or ``rbd resize`` on its RBD image. Disks only grow (a smaller size is a 422:
it would cut off the guest's file systems), and the growth must fit the pool's free space as
a new disk must. Growing the partition and file system inside is the guest's business
(cloud-init's growpart does it at boot).
"""

from __future__ import annotations

from corral.api import Operation, VmState, VolumeResize
from corral.domainxml import Domain
from corral.engine.context import EngineContext
from corral.engine.db.models import StoragePool, Vm
from corral.engine.operations import OpContext
from corral.engine.services import pools, vm_design
from corral.engine.services.vm_lookup import find_vm
from corral.errors import InvalidInput, NotFound, WrongState

GROWABLE = frozenset({VmState.STOPPED, VmState.RUNNING, VmState.PAUSED, VmState.CRASHED})


def grow(ctx: EngineContext, name: str, req: VolumeResize) -> Operation:
    size = req.size_bytes
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        if VmState(vm.state) not in GROWABLE:
            raise WrongState(f"cannot resize the root disk of VM {name}: it is {vm.state} "
                             "(wait until it is stopped or running)", state=vm.state)
        if size <= vm.disk_bytes:
            what = "already" if size == vm.disk_bytes else "bigger than that:"
            raise InvalidInput(f"the root disk of VM {name} is {what} {vm.disk_bytes >> 20} "
                               f"MiB; disks only grow (asked: {size >> 20} MiB)", field="size")
        pool = vm_design.root_pool(s, vm) or \
            s.query(StoragePool).filter_by(name=pools.DEFAULT_POOL).one_or_none()
        more, vm_id, host_id = size - vm.disk_bytes, vm.id, vm.host_id
        if pool is not None:
            s.expunge(pool)
    if pool is not None and pool.status == "ready":
        pools.check_room(ctx, pool, more, f"growing the root disk of VM {name}", "size")
    return ctx.ops.submit("vm.disk.resize", {"vms": [name]}, {"vm_id": vm_id, "size": size},
                          [f"vm:{name}"], host_id=host_id)


def execute(ctx: EngineContext, op: OpContext) -> None:
    vm_id, size = op.params["vm_id"], int(op.params["size"])
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None or vm.host_id is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        pool = vm_design.root_pool(s, vm)
        name, host_id = vm.name, vm.host_id
        pool_name = pool.name if pool is not None else pools.DEFAULT_POOL
    agent = ctx.agent(host_id)
    if agent.domain(name).state in ("running", "paused"):
        target = _root_target(ctx, vm_id)
        op.progress(30, f"growing disk {target} of running VM {name}")
        capacity = agent.resize_domain_disk(name, target, size).capacity
    else:
        op.progress(30, f"growing the root disk of VM {name}")
        capacity = agent.grow_root(pool_name, name, size).capacity
    with ctx.db.session() as s:
        row = s.get(Vm, vm_id)
        if row is not None:
            row.disk_bytes = capacity
    op.progress(100, f"root disk of VM {name}: {capacity >> 20} MiB")
    ctx.bus.publish("vm", {"name": name, "message": f"root disk grown to {capacity >> 20} MiB"})


def _root_target(ctx: EngineContext, vm_id: str) -> str:
    """The root disk's target (``vda``): the designer puts it first."""
    for disk in Domain.from_xml(vm_design.domain_xml(ctx, vm_id)[2]).devices.disks:
        if disk.device in (None, "disk") and disk.target_dev:
            return disk.target_dev
    raise NotFound(f"VM {vm_id} has no root disk")


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.disk.resize", lambda op: execute(ctx, op))
