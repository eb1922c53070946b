"""Volumes attached to VMs: ``corral vm disk attach|detach``, hot-plugged into running VMs.

A volume is attached to at most one VM; its row names the VM, the bus and the target it
keeps for as long as it stays attached (``vdb``, ``sdc``, ...: the first name the VM's
designed domain and its other volumes leave free, picked by the operation under the VM's
lock). Attach and detach lock the VM (they serialize with its power operations) and the
volume, and mark the volume ``attaching``/``detaching`` so no other request touches it
meanwhile; attaching claims the volume in one conditional UPDATE (engine/db/claims.py), so
of two requests for one volume exactly one gets it. A running VM gets the disk at once
(libvirt hot-plug, LIVE) and in its definition (CONFIG); a stopped VM in its definition
only. virtio and scsi disks hot-plug; sata (AHCI) cannot, so it is refused on a running VM
(checked again under the locks: a start queued before may have run).

The designer must include attached volumes whenever it designs the VM's domain (a start
redefines it): services/vm_design.py designs them with the rest of the VM.
"""

from __future__ import annotations

import contextlib

from sqlalchemy.orm import Session

from corral.api import DiskAttach, DiskBus, Operation, VmDisk, VmState
from corral.domainxml import Controller, Domain, design_disk
from corral.domainxml.designer import target_name
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.services import op_undo, pools, vm_design, volumes
from corral.engine.services.vm_lookup import check_device_change, find_vm
from corral.engine.services.vm_migration import SHARED_POOL_TYPES
from corral.errors import Conflict, CorralError, InvalidInput, NotFound

ATTACHING, DETACHING, READY = "attaching", "detaching", "ready"
_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd"}


# -- reading -------------------------------------------------------------------------------

def list_disks(ctx: EngineContext, vm_name: str) -> list[VmDisk]:
    """Root disk, cloud-init seed and attached volumes of a VM, in target order."""
    with ctx.db.session() as s:
        vm = find_vm(s, vm_name)
        vm_id, disk_bytes = vm.id, vm.disk_bytes
        attached = [(pool, vol) for vol, pool in
                    s.query(Volume, StoragePool).join(StoragePool, Volume.pool_id == StoragePool.id)
                    .filter(Volume.vm_id == vm.id)]
        s.expunge_all()
    out = [VmDisk(target=vol.target or "?", bus=vol.bus or "virtio", kind="volume",
                  volume=f"{pool.name}/{vol.name}", format=vol.format, size=vol.size,
                  source=volumes.source(pool, vol)) for pool, vol in attached]
    sources = {d.source for d in out}
    for disk in Domain.from_xml(vm_design.domain_xml(ctx, vm_id)[2]).devices.disks:
        if disk.source_path in sources:
            continue
        cdrom = disk.device == "cdrom"
        out.append(VmDisk(target=disk.target_dev or "?", bus=disk.target_bus or "?",
                          kind="seed" if cdrom else "root", format=disk.driver_type or "?",
                          size=None if cdrom else disk_bytes, source=disk.source_path or "?"))
    return sorted(out, key=lambda d: vm_design.target_key(d.target))


# -- attach --------------------------------------------------------------------------------

def _free_target(ctx: EngineContext, s: Session, vm: Vm, bus: str) -> str:
    """The first name of the bus that neither the designed domain nor a volume uses."""
    designed = Domain.from_xml(vm_design.domain_xml(ctx, vm.id)[2])
    used = {d.target_dev for d in designed.devices.disks}
    used |= {t for (t,) in s.query(Volume.target).filter(Volume.vm_id == vm.id)}
    prefix = _PREFIX[bus]
    for index in range(26 * 27):
        name = target_name(prefix, index)
        if name not in used:
            return name
    raise Conflict(f"VM {vm.name} has no free {bus} disk name left", field="bus")


def _check_free(s: Session, vol: Volume, ref: str) -> None:
    """409 unless the volume is free to attach (as read now)."""
    if vol.vm_id is not None:
        other = s.get(Vm, vol.vm_id)
        who = other.name if other else vol.vm_id
        raise Conflict(f"volume {ref} is already attached to VM {who}", field="volume", vm=who)
    if vol.status != READY:
        raise Conflict(f"volume {ref} is {vol.status}, not ready", field="volume")


def _check_bus(vm_name: str, state: VmState, bus: str) -> None:
    if state == VmState.RUNNING and bus == DiskBus.SATA.value:
        raise InvalidInput(f"VM {vm_name} is running and sata (AHCI) disks cannot be "
                           "hot-plugged: use --bus virtio or scsi, or stop the VM", field="bus")


def attach(ctx: EngineContext, vm_name: str, req: DiskAttach) -> Operation:
    with ctx.db.session() as s:
        vm = find_vm(s, vm_name)
        state = check_device_change(vm, "attach a disk to", "disks")
        _check_bus(vm_name, state, req.bus.value)
        pool = pools.find(s, req.pool)
        pools.check_ready(pool)
        vol = volumes.find(s, pool, req.name)
        if vol.project != vm.project:  # another project's volume: as if there were none
            raise NotFound(f"volume {req.volume} not found in project {vm.project}",
                           field="volume")
        _check_free(s, vol, req.volume)  # the clear message; the claim below decides
        if not pools.usable_on(pool, vm.host_id):
            raise Conflict(f"volume {req.volume} is in dir pool {pool.name} of another host "
                           f"than VM {vm_name}'s; use a shared or rbd pool", field="volume")
        if pool.type == "rbd" and not pool.monitors:
            raise Conflict(f"rbd pool {pool.name} knows no Ceph monitor", field="volume")
        if vm.ha and pool.type not in SHARED_POOL_TYPES:  # HA: it may restart elsewhere
            raise InvalidInput(f"VM {vm_name} is HA and volume {req.volume} is in dir pool "
                               f"{pool.name}, which only its host reaches: use a shared or "
                               "rbd pool (or `corral vm set NAME --no-ha`)", field="volume")
        if not claims.claim(s, Volume, vol.id, {"vm_id": None, "status": READY},
                            {"vm_id": vm.id, "bus": req.bus.value, "target": None,
                             "status": ATTACHING}):
            _check_free(s, vol, req.volume)  # another request claimed it meanwhile
            raise Conflict(f"volume {req.volume} was just taken", field="volume")
        params = {"vm_id": vm.id, "volume_id": vol.id, "bus": req.bus.value}
        host_id = vm.host_id
    ctx.bus.publish("volume", {"name": req.volume, "status": ATTACHING, "vm": vm_name})
    return ctx.ops.submit("vm.disk_attach", {"vms": [vm_name], "volumes": [req.volume]},
                          params, [f"vm:{vm_name}", f"volume:{req.volume}"], host_id=host_id)


def _prereq_attach(ctx: EngineContext, op: OpContext) -> None:
    """Under the locks: a power operation queued before may have started the VM."""
    with ctx.db.session() as s:
        vm = s.get(Vm, op.params["vm_id"])
        if vm is not None:
            _check_bus(vm.name, VmState(vm.state), str(op.params.get("bus") or ""))


def _load(ctx: EngineContext, op: OpContext) -> tuple[Vm, StoragePool, Volume] | None:
    with ctx.db.session() as s:
        vm = s.get(Vm, op.params["vm_id"])
        vol = s.get(Volume, op.params["volume_id"])
        if vm is None or vol is None or vol.vm_id != vm.id or vm.host_id is None:
            return None
        pool = s.get(StoragePool, vol.pool_id)
        assert pool is not None
        s.expunge_all()
        return vm, pool, vol


def _finish(ctx: EngineContext, vol_id: str, ref: str, attached: bool) -> None:
    with ctx.db.session() as s:
        vol = s.get(Volume, vol_id)
        if vol is None:
            return
        if not attached:
            vol.vm_id = vol.bus = vol.target = None
        vol.status = READY
    ctx.bus.publish("volume", {"name": ref, "status": READY})


def execute_attach(ctx: EngineContext, op: OpContext) -> None:
    loaded = _load(ctx, op)
    if loaded is None:
        return
    vm, pool, vol = loaded
    assert vm.host_id is not None
    ref = f"{pool.name}/{vol.name}"
    if vol.target is None:  # picked here, under the VM's lock: two attaches never share one
        with ctx.db.session() as s:
            row, vm_row = s.get(Volume, vol.id), s.get(Vm, vm.id)
            assert row is not None and vm_row is not None
            row.target = vol.target = _free_target(ctx, s, vm_row, vol.bus or "virtio")
    spec = vm_design.volume_spec(pool, vol)
    controller_xml: str | None = None  # a SCSI disk needs its controller first
    if spec.bus == "scsi":
        controller = Controller()
        controller.type, controller.index, controller.model = "scsi", 0, "virtio-scsi"
        controller_xml = controller.to_xml()
    agent = ctx.agent(vm.host_id)
    op.progress(30, f"plugging {ref} into VM {vm.name} as {vol.target}")
    try:
        agent.attach_disk(vm.name, design_disk(spec).to_xml(), controller_xml)
    except CorralError:
        with contextlib.suppress(CorralError):  # nothing half-plugged stays behind
            agent.detach_disk(vm.name, spec.path)
        _finish(ctx, vol.id, ref, attached=False)
        raise
    _finish(ctx, vol.id, ref, attached=True)


# -- detach --------------------------------------------------------------------------------

def detach(ctx: EngineContext, vm_name: str, volume_ref: str) -> Operation:
    try:
        ref = DiskAttach(volume=volume_ref)
    except ValueError as exc:
        raise InvalidInput(f"volume {volume_ref!r} must be POOL/NAME", field="volume") from exc
    with ctx.db.session() as s:
        vm = find_vm(s, vm_name)
        check_device_change(vm, "detach a disk from", "disks")
        vol = volumes.find(s, pools.find(s, ref.pool), ref.name)
        if vol.vm_id != vm.id:
            raise Conflict(f"volume {volume_ref} is not attached to VM {vm_name}",
                           field="volume")
        if vol.status != READY:
            raise Conflict(f"volume {volume_ref} is {vol.status}, not ready", field="volume")
        if not claims.claim(s, Volume, vol.id, {"vm_id": vm.id, "status": READY},
                            {"status": DETACHING}):
            raise Conflict(f"volume {volume_ref} is {vol.status}, not ready", field="volume")
        params = {"vm_id": vm.id, "volume_id": vol.id}
        host_id = vm.host_id
    ctx.bus.publish("volume", {"name": volume_ref, "status": DETACHING, "vm": vm_name})
    return ctx.ops.submit("vm.disk_detach", {"vms": [vm_name], "volumes": [volume_ref]},
                          params, [f"vm:{vm_name}", f"volume:{volume_ref}"], host_id=host_id)


def execute_detach(ctx: EngineContext, op: OpContext) -> None:
    loaded = _load(ctx, op)
    if loaded is None:
        return
    vm, pool, vol = loaded
    assert vm.host_id is not None
    ref = f"{pool.name}/{vol.name}"
    op.progress(30, f"unplugging {ref} from VM {vm.name}")
    try:
        ctx.agent(vm.host_id).detach_disk(vm.name, volumes.source(pool, vol))
    except NotFound:
        pass  # no domain: the volume is attached to nothing
    except CorralError:
        _finish(ctx, vol.id, ref, attached=True)  # still attached: the error says why
        raise
    _finish(ctx, vol.id, ref, attached=False)


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.disk_attach", lambda op: execute_attach(ctx, op),
                     prereq=lambda op: _prereq_attach(ctx, op),
                     undo=op_undo.set_fields(ctx, Volume, "volume_id", vm_id=None, bus=None,
                                             target=None, status=READY))
    ctx.ops.register("vm.disk_detach", lambda op: execute_detach(ctx, op),
                     undo=op_undo.set_fields(ctx, Volume, "volume_id", status=READY))
