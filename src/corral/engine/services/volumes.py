"""Volumes of storage pools: thin qcow2 or raw files, or RBD images.

Checks come first (names, format for the pool type, size against the pool's free space as
a host reports it, a stray file or image of that name), then an operation asks the pool's
agent to do the work; a failed create removes what it wrote and the row. A volume is
``creating``, ``ready``, ``resizing``, ``attaching``, ``detaching`` or ``deleting``; every
change but attach/detach (services/vm_disks.py) needs it ready. A volume attached to a VM is
never deleted, and volumes only grow (a running VM's disk grows through QEMU, so the guest
sees the new size at once).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy.orm import Session

from corral.agent_api.pools import VolumeFormat as AgentVolumeFormat
from corral.api import Operation, VolumeCreate, VolumeFormat, VolumeResize
from corral.api import Volume as VolumeOut
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.services import op_undo, pools, quotas
from corral.errors import Conflict, CorralError, InvalidInput, NotFound

log = logging.getLogger(__name__)

READY, CREATING, RESIZING, DELETING = "ready", "creating", "resizing", "deleting"
# A row's format (checked against the API's VolumeFormat when it was made) as the agent's.
_FORMATS: dict[str, AgentVolumeFormat] = {"qcow2": "qcow2", "raw": "raw"}


def find(s: Session, pool: StoragePool, name: str) -> Volume:
    vol = s.query(Volume).filter_by(pool_id=pool.id, name=name).one_or_none()
    if vol is None:
        raise NotFound(f"volume {pool.name}/{name} not found", field="volume")
    return vol


def source(pool: StoragePool, vol: Volume) -> str:
    """Where the volume lives: its file, or ``CEPH_POOL/NAME`` of its RBD image."""
    if pool.type == "rbd":
        return f"{pool.ceph_pool}/{vol.name}"
    return f"{pool.path}/{vol.name}.{vol.format}"


def to_api(s: Session, pool: StoragePool, vol: Volume,
           allocation: int | None = None) -> VolumeOut:
    vm = s.get(Vm, vol.vm_id) if vol.vm_id else None
    return VolumeOut(
        pool=pool.name, name=vol.name, project=vol.project, format=VolumeFormat(vol.format), size=vol.size,
        allocation=allocation, status=vol.status, source=source(pool, vol),
        vm=vm.name if vm else None, bus=vol.bus if vm else None,
        target=vol.target if vm else None, created_at=vol.created_at,
    )


def _allocations(ctx: EngineContext, pool: StoragePool) -> dict[str, int]:
    """Bytes written per volume, from one agent call for the whole pool (empty if none)."""
    try:
        infos = pools.agent_for(ctx, pool).volumes(pool.name)
    except CorralError as exc:
        log.warning("pool %s: no volume usage: %s", pool.name, exc.message)
        return {}
    return {i.name: i.allocation for i in infos}


def list_volumes(ctx: EngineContext, pool_name: str | None = None) -> list[VolumeOut]:
    out: list[VolumeOut] = []
    with ctx.db.session() as s:
        rows = [pools.find(s, pool_name)] if pool_name else \
            list(s.query(StoragePool).order_by(StoragePool.name))
        for pool in rows:
            vols = list(s.query(Volume).filter_by(pool_id=pool.id).order_by(Volume.name))
            used = _allocations(ctx, pool) if vols else {}
            out += [to_api(s, pool, v, used.get(v.name)) for v in vols]
    return out


def get(ctx: EngineContext, pool_name: str, name: str) -> VolumeOut:
    with ctx.db.session() as s:
        pool = pools.find(s, pool_name)
        vol = find(s, pool, name)
        allocation = None
        with contextlib.suppress(CorralError):
            allocation = pools.agent_for(ctx, pool).volume(pool.name, name).allocation
        return to_api(s, pool, vol, allocation)


# -- create --------------------------------------------------------------------------------

def create(ctx: EngineContext, pool_name: str, req: VolumeCreate,
           project: str = DEFAULT_PROJECT) -> Operation:
    size = req.size_bytes
    with ctx.db.session() as s:
        pool = pools.find(s, pool_name)
        pools.check_ready(pool)
        if s.query(Volume).filter_by(pool_id=pool.id, name=req.name).count():
            raise Conflict(f"volume {pool_name}/{req.name} already exists", field="name")
        fmt = req.format or (VolumeFormat.RAW if pool.type == "rbd" else VolumeFormat.QCOW2)
        if pool.type == "rbd" and fmt != VolumeFormat.RAW:
            raise InvalidInput("RBD images are raw: an rbd pool holds raw volumes only",
                               field="format")
        s.expunge(pool)
    agent = pools.agent_for(ctx, pool)
    try:  # a file or image corral does not know of: never adopt (or overwrite) it
        info = agent.volume(pool_name, req.name)
    except NotFound as exc:
        if exc.details.get("pool_missing"):
            raise
    else:
        raise Conflict(f"pool {pool_name} already holds {info.source}, which is not a "
                       "corral volume; pick another name", field="name")
    pools.check_room(ctx, pool, size, f"volume {req.name}", "size")
    with ctx.db.session() as s:
        held = s.get(StoragePool, pool.id)
        if held is None:
            raise NotFound(f"storage pool {pool_name} was just deleted", field="pool")
        claims.hold(s, held)  # a delete of the pool at the same moment
        pools.check_ready(held)
        if s.query(Volume).filter_by(pool_id=pool.id, name=req.name).count():
            raise Conflict(f"volume {pool_name}/{req.name} already exists", field="name")
        quotas.check(s, project, {"volumes": 1, "disk": size})
        vol = Volume(pool_id=pool.id, name=req.name, format=fmt.value, size=size,
                     status=CREATING, project=project)
        s.add(vol)
        with claims.unique(f"volume {pool_name}/{req.name} already exists", field="name"):
            s.flush()
        vol_id = vol.id
    ref = f"{pool_name}/{req.name}"
    ctx.bus.publish("volume", {"name": ref, "status": CREATING})
    return ctx.ops.submit("volume.create", {"volumes": [ref]}, {"volume_id": vol_id},
                          [f"volume:{ref}"], host_id=pool.host_id, project=project)


def _load(ctx: EngineContext, vol_id: str) -> tuple[StoragePool, Volume] | None:
    with ctx.db.session() as s:
        vol = s.get(Volume, vol_id)
        if vol is None:
            return None
        pool = s.get(StoragePool, vol.pool_id)
        assert pool is not None
        s.expunge_all()
        return pool, vol


def _set(ctx: EngineContext, vol_id: str, **fields: Any) -> None:
    with ctx.db.session() as s:
        vol = s.get(Volume, vol_id)
        if vol is None:
            return
        for k, v in fields.items():
            setattr(vol, k, v)
        pool = s.get(StoragePool, vol.pool_id)
        ref = f"{pool.name if pool else '?'}/{vol.name}"
        status = vol.status
    ctx.bus.publish("volume", {"name": ref, "status": status})


def execute_create(ctx: EngineContext, op: OpContext) -> None:
    loaded = _load(ctx, op.params["volume_id"])
    if loaded is None:
        return
    pool, vol = loaded
    agent = pools.agent_for(ctx, pool)
    op.progress(20, f"creating {vol.format} volume of {vol.size >> 20} MiB")
    try:
        info = agent.create_volume(pool.name, vol.name, vol.size, _FORMATS[vol.format])
    except CorralError as exc:
        # The agent writes under a temporary name and renames: no half-written volume. A
        # volume it may have finished (a timeout) is ours to remove, but never one that
        # appeared meanwhile under our name (Conflict: it is someone else's).
        if not isinstance(exc, Conflict):
            with contextlib.suppress(CorralError):
                agent.delete_volume(pool.name, vol.name)
        with ctx.db.session() as s:
            row = s.get(Volume, vol.id)
            if row is not None:
                s.delete(row)
        ctx.bus.publish("volume", {"name": f"{pool.name}/{vol.name}", "status": "deleted"})
        raise
    _set(ctx, vol.id, status=READY, size=info.capacity)


# -- resize --------------------------------------------------------------------------------

def resize(ctx: EngineContext, pool_name: str, name: str, req: VolumeResize) -> Operation:
    size = req.size_bytes
    with ctx.db.session() as s:
        pool = pools.find(s, pool_name)
        vol = find(s, pool, name)
        if vol.status != READY:
            raise Conflict(f"volume {pool_name}/{name} is {vol.status}, not ready",
                           field="volume")
        if size < vol.size:
            raise InvalidInput(
                f"volume {pool_name}/{name} is {vol.size >> 20} MiB; shrinking it to "
                f"{size >> 20} MiB would cut off data, and volumes only grow", field="size")
        current = vol.size
        s.expunge(pool)
    if size > current:
        pools.check_room(ctx, pool, size - current, f"growing {pool_name}/{name}", "size")
    with ctx.db.session() as s:
        vol = find(s, pools.find(s, pool_name), name)
        # Claimed: an attach claiming it at the same moment must not be overwritten.
        if not claims.claim(s, Volume, vol.id, {"status": READY}, {"status": RESIZING}):
            raise Conflict(f"volume {pool_name}/{name} is {vol.status}, not ready",
                           field="volume")
        vol_id, project = vol.id, vol.project
    ref = f"{pool_name}/{name}"
    ctx.bus.publish("volume", {"name": ref, "status": RESIZING})
    # the volume's project: its users follow the operation as they do its create
    return ctx.ops.submit("volume.resize", {"volumes": [ref]},
                          {"volume_id": vol_id, "size": size}, [f"volume:{ref}"],
                          host_id=pool.host_id, project=project)


def execute_resize(ctx: EngineContext, op: OpContext) -> None:
    loaded = _load(ctx, op.params["volume_id"])
    if loaded is None:
        return
    pool, vol = loaded
    size = int(op.params["size"])
    try:
        capacity = _grow(ctx, op, pool, vol, size)
    except CorralError:
        _set(ctx, vol.id, status=READY)  # unchanged: the tools grow in one step or not at all
        raise
    _set(ctx, vol.id, status=READY, size=capacity)


def _grow(ctx: EngineContext, op: OpContext, pool: StoragePool, vol: Volume, size: int) -> int:
    """Through QEMU when a running VM has the volume (the guest sees it), else offline."""
    if vol.vm_id is not None and vol.target:
        with ctx.db.session() as s:
            vm = s.get(Vm, vol.vm_id)
            where = (vm.name, vm.host_id) if vm is not None and vm.host_id else None
        if where is not None:
            agent = ctx.agent(where[1])
            if agent.domain(where[0]).state in ("running", "paused"):
                op.progress(30, f"growing disk {vol.target} of running VM {where[0]}")
                return agent.resize_domain_disk(where[0], vol.target, size).capacity
    op.progress(30, "growing the volume")
    return pools.agent_for(ctx, pool).resize_volume(pool.name, vol.name, size).capacity


# -- delete --------------------------------------------------------------------------------

def delete(ctx: EngineContext, pool_name: str, name: str) -> Operation:
    with ctx.db.session() as s:
        pool = pools.find(s, pool_name)
        vol = find(s, pool, name)
        if vol.vm_id is not None:
            vm = s.get(Vm, vol.vm_id)
            who = vm.name if vm else vol.vm_id
            raise Conflict(f"volume {pool_name}/{name} is in use: attached to VM {who} "
                           f"(`corral vm disk detach {who} --volume {pool_name}/{name}`)",
                           field="volume", vm=who)
        if vol.status != READY:
            raise Conflict(f"volume {pool_name}/{name} is {vol.status}, not ready",
                           field="volume")
        # Claimed: of a delete and an attach at the same moment, one wins.
        if not claims.claim(s, Volume, vol.id, {"vm_id": None, "status": READY},
                            {"status": DELETING}):
            raise Conflict(f"volume {pool_name}/{name} was just taken by another request",
                           field="volume")
        vol_id, host_id, project = vol.id, pool.host_id, vol.project
    ref = f"{pool_name}/{name}"
    ctx.bus.publish("volume", {"name": ref, "status": DELETING})
    return ctx.ops.submit("volume.delete", {"volumes": [ref]}, {"volume_id": vol_id},
                          [f"volume:{ref}"], host_id=host_id, project=project)


def execute_delete(ctx: EngineContext, op: OpContext) -> None:
    loaded = _load(ctx, op.params["volume_id"])
    if loaded is None:
        return
    pool, vol = loaded
    op.progress(30, "removing the volume")
    try:
        pools.agent_for(ctx, pool).delete_volume(pool.name, vol.name)
    except CorralError:
        _set(ctx, vol.id, status=READY)  # still there: the error says why
        raise
    with ctx.db.session() as s:
        row = s.get(Volume, vol.id)
        if row is not None:
            s.delete(row)
    ctx.bus.publish("volume", {"name": f"{pool.name}/{vol.name}", "status": "deleted"})


def register(ctx: EngineContext) -> None:
    back = op_undo.set_fields(ctx, Volume, "volume_id", status=READY)
    ctx.ops.register("volume.create", lambda op: execute_create(ctx, op),
                     undo=op_undo.delete_row(ctx, Volume, "volume_id"))
    ctx.ops.register("volume.resize", lambda op: execute_resize(ctx, op), undo=back)
    ctx.ops.register("volume.delete", lambda op: execute_delete(ctx, op), undo=back)
