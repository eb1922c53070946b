"""Storage fencing before an HA recovery (services/vm_recovery.py): every Ceph client that
has one of the VM's RBD disks open (its root disk in an rbd pool, its attached rbd
volumes) is blocklisted through the target host's agent (a surviving host that reaches
Ceph: corral.agent.pools.rbd_fence), so the old host's QEMU, if it still lives cut off,
can no longer write when the VM starts on the target.

A disk that cannot be fenced fails the recovery before anything is defined on the target:
never a second writer on a disk another client may still write to. The VM stays on its
old host's row and the HA loop tries again next round.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.engine.context import EngineContext
from corral.engine.db.models import Host, StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.errors import CorralError, NotFound


@dataclass(frozen=True)
class RbdDisk:
    pool: str
    volume: str | None  # None: the VM's root disk
    label: str  # as a person reads it: "root disk in pool P", "volume P/V"


def rbd_disks(ctx: EngineContext, vm_id: str) -> tuple[str, list[RbdDisk]]:
    """(the VM's name, its disks in rbd pools: the root disk first, then volumes by name)."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        found = []
        root = s.get(StoragePool, vm.root_pool_id) if vm.root_pool_id else None
        if root is not None and root.type == "rbd":
            found.append(RbdDisk(root.name, None, f"root disk in pool {root.name}"))
        rows = (s.query(Volume, StoragePool).join(StoragePool, Volume.pool_id == StoragePool.id)
                .filter(Volume.vm_id == vm_id, StoragePool.type == "rbd")
                .order_by(StoragePool.name, Volume.name).all())
        found += [RbdDisk(pool.name, vol.name, f"volume {pool.name}/{vol.name}")
                  for vol, pool in rows]
        return vm.name, found


def fence_disks(ctx: EngineContext, op: OpContext, vm_id: str, host_id: str) -> list[str]:
    """Blocklist the Ceph clients of every RBD disk of the VM through host ``host_id``'s
    agent; the client addresses blocklisted (also in the operation's progress message).
    A disk that cannot be fenced raises, saying which and why."""
    name, disks = rbd_disks(ctx, vm_id)
    if not disks:
        return []
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        via = host.name if host is not None else host_id
    agent = ctx.agent(host_id)
    fenced: list[str] = []
    for disk in disks:
        try:
            answer = (agent.fence_root(disk.pool, name) if disk.volume is None
                      else agent.fence_volume(disk.pool, disk.volume))
        except CorralError as exc:
            raise type(exc)(
                f"storage fencing of VM {name}'s {disk.label} through host {via} failed, so "
                f"it is not started there (another client may still write to it): "
                f"{exc.message}", field=exc.field, **exc.details) from exc
        fenced += [a for a in answer.addresses if a not in fenced]
    said = (f"Ceph clients blocklisted: {', '.join(fenced)}" if fenced
            else "no Ceph client had them open")
    message = f"storage fencing of {len(disks)} RBD disk(s) of VM {name}: {said}"
    op.progress(3, message)  # later steps' messages follow: the event keeps it
    ctx.bus.publish("ha", {"vm": name, "event": "storage-fenced", "addresses": fenced,
                           "operation": op.id, "message": message})
    return fenced
