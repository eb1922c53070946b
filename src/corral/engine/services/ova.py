"""OVA export (a stopped VM → OVF 1.0 + streamOptimized VMDKs) and import (OVA → image + VM).

Files are on the host of the VM (this single node's machine, as ``image import`` reads
files): the agent writes the OVA and reads it (corral.agent.ova, jobs with progress).

Export: the root disk is ``disk1.vmdk``, the attached volumes (dir and shared pools) follow
in target order (``disk2.vmdk``...). Import makes an image ``NAME-ova`` of the OVA's first
disk (converted to qcow2), then a VM ``NAME`` as a linked clone of it, with the CPUs, memory
and first NIC's MAC of the descriptor (its NIC models and network names are not kept: corral
NICs are virtio on ``--network``); every other disk becomes a qcow2 volume
``default/NAME-diskN`` attached to the VM in the descriptor's order. A failed import leaves
no VM, no volume and no image behind.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from corral.agent_api.images import (
    OvaExportBody,
    OvaFillBody,
    OvaImportBody,
    OvaNic,
    OvaSystem,
    VolumeRef,
)
from corral.api import Operation, PowerAction, VmCreate, VmState, VmStatePut
from corral.api.snapshots import OvaExport, OvaImport
from corral.api.storage import DiskAttach, VolumeCreate
from corral.engine.agent_client import AgentClient
from corral.engine.agent_jobs import run_job
from corral.engine.context import EngineContext
from corral.engine.db.models import Image, Network, StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.services import (
    host_files,
    images,
    op_undo,
    pools,
    vm_clones,
    vm_design,
    vm_disks,
    vm_nics,
    vm_roots,
    vm_snapshots,
    vms,
    volumes,
)
from corral.engine.services.hosts import pick_host
from corral.errors import Conflict, CorralError, HostError, InvalidInput, NotFound, WrongState
from corral.images import ovf
from corral.validation import validate_name

_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_VOLUME_POOL = pools.DEFAULT_POOL  # where an imported OVA's other disks become volumes


def _extra_volumes(name: str, system: ovf.OvfSystem) -> list[str]:
    """The volumes an import of ``system`` as VM ``name`` makes: one per disk after the
    first (``NAME-disk2``, ...)."""
    return [f"{name}-disk{i}" for i in range(2, len(system.disks) + 1)]


def _attached(s: Session, vm_id: str) -> list[tuple[StoragePool, Volume]]:
    rows = (s.query(Volume, StoragePool).join(StoragePool, Volume.pool_id == StoragePool.id)
            .filter(Volume.vm_id == vm_id, Volume.target.isnot(None)).all())
    rows.sort(key=lambda r: vm_design.target_key(r[0].target))
    return [(pool, vol) for vol, pool in rows]


def _wait(ctx: EngineContext, op: Operation, what: str, timeout: float = 900) -> None:
    done = ctx.ops.wait(op.id, timeout)
    if done.status.value != "success":
        raise HostError(f"{what}: {(done.error or {}).get('message') or done.status.value}")


def export(ctx: EngineContext, name: str, req: OvaExport) -> Operation:
    vm_id, host_id, state = vm_snapshots._vm(ctx, name)
    vm_roots.require_storage_dir(ctx, vm_id, name, "OVA export")
    if state not in (VmState.STOPPED, VmState.CRASHED):
        raise WrongState(f"VM {name} is {state.value}: stop it before exporting",
                         state=state.value)
    path = Path(req.file)
    if not path.is_absolute() or path.suffix != ".ova":
        raise InvalidInput("the OVA file must be an absolute path ending in .ova", field="file")
    host_files.check_write(ctx, req.file, "file")  # not /proc, /etc, corral's data... (422)
    if path.exists() or path.is_symlink():
        raise Conflict(f"{path} exists already", field="file")
    if not path.parent.is_dir():
        raise InvalidInput(f"directory {path.parent} does not exist", field="file")
    with ctx.db.session() as s:
        rbd = [f"{pool.name}/{vol.name}" for pool, vol in _attached(s, vm_id)
               if pool.type == "rbd"]
    if rbd:
        raise Conflict(f"VM {name} has RBD volumes attached ({', '.join(rbd)}): OVA export "
                       "takes disks of dir and shared pools; detach them first", field="vm")
    params = {"vm_id": vm_id, "host_id": host_id, "vm": name, "file": str(path)}
    return ctx.ops.submit("vm.export_ova", {"vms": [name], "files": [str(path)]}, params,
                          [f"vm:{name}"], host_id=host_id, exclusive=["files"])


def _execute_export(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    with ctx.db.session() as s:
        vm = s.get(Vm, p["vm_id"])
        if vm is None:
            raise NotFound(f"VM {p['vm']} no longer exists")
        nics = [(row.mac, s.get(Network, row.network_id)) for row in vm_nics.nic_rows(s, vm)]
        body = OvaExportBody(path=p["file"], cpus=vm.cpus, memory_mib=vm.memory_mib,
                             nics=[OvaNic(network=net.name if net else None, mac=mac)
                                   for mac, net in nics],
                             volumes=[VolumeRef(pool=pool.name, name=vol.name)
                                      for pool, vol in _attached(s, vm.id)])
    agent = ctx.agent(p["host_id"])
    res = run_job(agent, op, agent.export_ova_job(p["vm"], body), span=(1, 99))
    op.progress(100, f"exported {p['vm']} to {res.path} ({res.size >> 20} MiB)")


def import_ova(ctx: EngineContext, req: OvaImport) -> Operation:
    path = Path(req.file)
    if not path.is_absolute():
        raise InvalidInput(f"{req.file} is not a readable file (give an absolute path)",
                           field="file")
    # Only from an import directory, read through the file opened once (corral.safepaths).
    with host_files.check_read(ctx, req.file, "file").opened(req.file, "file") as pinned:
        system = ovf.parse(ovf.read_descriptor(pinned))  # a bad descriptor is refused now
    name = req.name or system.name
    try:
        validate_name(name, "name")
    except InvalidInput:
        raise InvalidInput(f"the OVA's VM name {name!r} is not a valid corral name: give one "
                           "with --name", field="name") from None
    if system.memory_mib < 16 or system.cpus < 1:
        raise InvalidInput(f"the OVA asks for {system.cpus} CPUs and {system.memory_mib} MiB",
                           field="file")
    image = f"{name}-ova"
    with ctx.db.session() as s:
        if s.query(Vm).filter_by(name=name).count():
            raise Conflict(f"VM {name} already exists (import with --name)", field="name")
        if s.query(Network).filter_by(name=req.network).count() == 0:
            raise InvalidInput(f"network {req.network} not found", field="network")
        extra = _extra_volumes(name, system)
        if extra:
            pool = pools.find(s, _VOLUME_POOL)
            taken = [v for v in extra if s.query(Volume).filter_by(pool_id=pool.id, name=v)
                     .count()]
            if taken:
                raise Conflict(f"the OVA's other disks would be volumes {', '.join(taken)} "
                               f"in pool {_VOLUME_POOL}, which exist already (import with "
                               "--name)", field="name", volumes=taken)
    host = pick_host(ctx, system.memory_mib)
    image_id = images.new_image(ctx, image)
    params = {"image_id": image_id, "host_id": host.id, "file": str(path), "name": name,
              "network": req.network, "start": req.start}
    # Locked on the image only: the VM's own create operation (vm:NAME), the volumes' and
    # their attaches run inside this one and take their locks themselves.
    return ctx.ops.submit("vm.import_ova", {"vms": [name], "images": [image]}, params,
                          [f"image:{image}"], host_id=host.id)


def _execute_import(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    with ctx.db.session() as s:
        img = s.get(Image, p["image_id"])
        if img is None:
            return
        image = img.name
    agent = ctx.agent(p["host_id"])
    try:
        info = run_job(agent, op, agent.import_ova_job(image, OvaImportBody(path=p["file"])),
                       span=(1, 80))
    except CorralError:
        images.drop_new_image(ctx, agent, p["image_id"], image)
        raise
    images.set_ready(ctx, p["image_id"], info)
    system = info.system
    extra = [f"{p['name']}-disk{i}" for i in range(2, len(system.disks) + 1)]
    made: list[str] = []  # what this run created, undone if a later step fails
    try:
        for i, vol in enumerate(extra, 1):
            op.progress(80 + 5 * i // len(extra), f"importing disk {i + 1} as volume "
                        f"{_VOLUME_POOL}/{vol}")
            if _make_volume(ctx, vol, system.disks[i].capacity):
                made.append(f"volume:{vol}")
            _fill_volume(ctx, op, p, vol, i)
        with ctx.db.session() as s:
            exists = s.query(Vm).filter_by(name=p["name"]).count() > 0
        if not exists:
            op.progress(86, f"creating VM {p['name']}")
            _wait(ctx, vms.create(ctx, VmCreate(
                name=p["name"], image=image, cpus=system.cpus,
                memory=f"{system.memory_mib}M", network=p["network"],
                start=p["start"] and not extra)), "creating the VM")
            made.append("vm")
        for vol in extra:
            with ctx.db.session() as s:
                made_vol = volumes.find(s, pools.find(s, _VOLUME_POOL), vol)
                vm = s.query(Vm).filter_by(name=p["name"]).one()
                attached = made_vol.vm_id == vm.id
            if not attached:
                op.progress(90, f"attaching {_VOLUME_POOL}/{vol}")
                _wait(ctx, vm_disks.attach(ctx, p["name"],
                                           DiskAttach(volume=f"{_VOLUME_POOL}/{vol}")),
                      f"attaching volume {vol}")
        _keep_mac(ctx, agent, p["name"], system)
        if extra and p["start"]:
            with ctx.db.session() as s:
                state = s.query(Vm.state).filter_by(name=p["name"]).scalar()
            if state != VmState.RUNNING.value:
                _wait(ctx, vms.change_state(ctx, p["name"], VmStatePut(action=PowerAction.START)),
                      "starting the VM")
    except CorralError:
        _undo_import(ctx, p["name"], made)
        images.drop_new_image(ctx, agent, p["image_id"], image)
        raise
    op.progress(100, f"imported VM {p['name']} ({system.cpus} CPUs, "
                     f"{system.memory_mib} MiB, image {image})")


def _make_volume(ctx: EngineContext, vol: str, capacity: int) -> bool:
    """An empty volume ``default/VOL``; True when this call created it (a resumed import
    finds it made)."""
    with ctx.db.session() as s:
        pool = pools.find(s, _VOLUME_POOL)
        if s.query(Volume).filter_by(pool_id=pool.id, name=vol).count():
            return False
    size = f"{max(1, -(-capacity // (1 << 20)))}M"  # a bare number would be GiB
    _wait(ctx, volumes.create(ctx, _VOLUME_POOL, VolumeCreate(name=vol, size=size)),
          f"creating volume {vol}")
    return True


def _fill_volume(ctx: EngineContext, op: OpContext, p: dict[str, Any], vol: str,
                 disk: int) -> None:
    """Write the OVA's disk number ``disk`` over the volume (a re-run writes the same)."""
    agent = ctx.agent(p["host_id"])
    res = run_job(agent, op, agent.fill_volume_job(
        _VOLUME_POOL, vol, OvaFillBody(path=p["file"], disk=disk)), span=(80, 85))
    with ctx.db.session() as s:
        row = volumes.find(s, pools.find(s, _VOLUME_POOL), vol)
        row.size = res.virtual_size


def _keep_mac(ctx: EngineContext, agent: AgentClient, name: str, system: OvaSystem) -> None:
    """Give the VM the OVA's first MAC when it is free and the VM is stopped."""
    macs = [n.mac for n in system.nics if n.mac and _MAC.fullmatch(n.mac)]
    if not macs:
        return
    with ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name=name).one()
        first = vm_nics.first_nic(s, vm.id)
        taken = vm_nics.mac_owner(s, macs[0].lower()) not in (None, vm.name)
        keep = (first is not None and not taken and vm.state == VmState.STOPPED.value
                and first[0].mac != macs[0].lower())
        if keep and first is not None:
            first[0].mac = macs[0].lower()
        vm_id = vm.id
    if keep:
        agent.define(name, vm_design.domain_xml(ctx, vm_id)[2])


def _undo_import(ctx: EngineContext, name: str, made: list[str]) -> None:
    """Remove what a failed import made (the VM first: it holds the volumes)."""
    if "vm" in made:
        with contextlib.suppress(CorralError):
            _wait(ctx, vms.delete(ctx, name, force=True), f"removing VM {name}")
    for item in made:
        if item.startswith("volume:"):
            with contextlib.suppress(CorralError):
                _wait(ctx, volumes.delete(ctx, _VOLUME_POOL, item.split(":", 1)[1]),
                      "removing a volume")


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.export_ova", lambda op: _execute_export(ctx, op),
                     prereq=lambda op: vm_clones.require_stopped(ctx, op.params["vm_id"],
                                                                 "exporting it"))
    ctx.ops.register("vm.import_ova", lambda op: _execute_import(ctx, op), may_cancel=True,
                     undo=op_undo.delete_row(ctx, Image, "image_id", event="image"))
