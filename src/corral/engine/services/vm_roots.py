"""Where a VM's root disk lives: the host's storage dir, or a pool (``vm create --pool``).

``vms.root_pool_id`` NULL (the ``default`` pool): ``STORAGE/vms/NAME.qcow2``, a qcow2 overlay
of the image (corral.agent.storage). Another pool (corral.agent.pools.roots): a qcow2 overlay
in the pool on a copy of the image made once per pool (dir, shared: every host of a shared
pool sees the same files, so the VM can move without copying its disk), or an RBD clone of
the image imported once into Ceph (rbd). The designer gets the root disk from
:func:`vm_design.root_spec`, made with the same :func:`vm_design.pool_disk_spec` as attached
volumes.
"""

from __future__ import annotations

import contextlib

from sqlalchemy.orm import Session

from corral.agent_api.pools import RootBody
from corral.engine.agent_client import AgentClient
from corral.engine.agent_jobs import run_job
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, StoragePool, Vm
from corral.engine.operations import OpContext
from corral.engine.services import pools, vm_design
from corral.errors import Conflict, CorralError, InvalidInput, NotFound

DEFAULT = pools.DEFAULT_POOL


def pick(s: Session, name: str | None, host: Host, iso: bool) -> str | None:
    """The id of the pool a new VM's root disk goes to (None: the host's storage dir)."""
    if name is None or name == DEFAULT:
        return None
    pool = pools.find(s, name)
    pools.check_ready(pool)
    if iso:
        raise InvalidInput("a VM installed from an ISO gets its blank disk in the default "
                           "pool (root disks in pools are clones of an image)", field="pool")
    if not pools.usable_on(pool, host.id):
        raise Conflict(f"dir pool {name} is on another host than {host.name}", field="pool")
    if pool.type == "rbd" and not pool.monitors:
        raise Conflict(f"rbd pool {name} knows no Ceph monitor", field="pool")
    return pool.id


def pool_type(ctx: EngineContext, vm_id: str) -> tuple[str, str] | None:
    """(pool name, pool type) of a VM's root disk; None in the host's storage dir."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        pool = vm_design.root_pool(s, vm) if vm is not None else None
        return (pool.name, pool.type) if pool is not None else None


def create(ctx: EngineContext, agent: AgentClient, op: OpContext, vm_id: str,
           image: str | None, size: int | None) -> None:
    """Make the root disk (idempotent: a re-run finds it made)."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        name, pool = vm.name, vm_design.root_pool(s, vm)
        pool_name = pool.name if pool is not None else None
    if pool_name is None:
        agent.create_disk(name, image, size)
        return
    assert image is not None
    # A job (an import into Ceph may take long): its result is a RootDisk, not needed here.
    run_job(agent, op, agent.create_root_job(pool_name, name, RootBody(image=image, size=size)),
            span=(10, 35))


def delete(ctx: EngineContext, agent: AgentClient, vm_id: str, name: str) -> None:
    """Remove the root disk and the bases no other disk needs (idempotent)."""
    found = pool_type(ctx, vm_id)
    if found is None:
        agent.delete_disk(name)
        return
    agent.delete_root(found[0], name)


def delete_quietly(ctx: EngineContext, agent: AgentClient, vm_id: str, name: str) -> None:
    with contextlib.suppress(CorralError):
        delete(ctx, agent, vm_id, name)


def require_storage_dir(ctx: EngineContext, vm_id: str, vm_name: str, what: str) -> None:
    """Refuse (409) work that reads the root disk from the host's storage dir."""
    found = pool_type(ctx, vm_id)
    if found is not None:
        raise Conflict(f"VM {vm_name}'s root disk is in {found[1]} pool {found[0]}: {what} "
                       "works on root disks in the default pool only", field="vm",
                       pool=found[0])


def users(s: Session, pool: StoragePool) -> list[str]:
    """VMs whose root disk is in the pool."""
    return sorted(n for (n,) in s.query(Vm.name).filter(Vm.root_pool_id == pool.id))
