"""Storage pools: desired state in the DB, set up on hosts by their agents.

A ``dir`` pool is a directory of one host (the host picked at creation); a ``shared`` pool is
a directory every host mounts at the same path, and an ``rbd`` pool a Ceph pool every host
reaches: those two are set up on every host that is up. ``create`` checks everything first
(request, name, path clashes, and each host's dry run: the directory can be made and reached
by QEMU, the shared directory exists, the Ceph cluster answers and has the pool), so a
refused request leaves no row or operation; the operation then sets the pool up on each
host and undoes it everywhere if one fails. A pool is ``creating``, ``ready`` or
``deleting``; volumes may be made only in a ready pool, and a pool with volumes (or the
``default`` pool, which also holds the host's images and VM root disks) is never deleted.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy.orm import Session

from corral.agent_api import Deleted
from corral.agent_api.pools import Marker, PoolBody, PoolSetup, PoolStats
from corral.api import Operation, PoolCreate, PoolType
from corral.api import Pool as PoolOut
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host, StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.services import host_files, op_undo
from corral.engine.services.host_fanout import put_on_hosts
from corral.engine.services.hosts import pick_host
from corral.errors import Conflict, CorralError, InsufficientResources, NotFound, Unavailable

log = logging.getLogger(__name__)

DEFAULT_POOL = "default"
DEFAULT_CEPH_CONF = "/etc/ceph/ceph.conf"
READY, CREATING, DELETING = "ready", "creating", "deleting"


# -- rows, hosts and agents ----------------------------------------------------------------

def find(s: Session, name: str) -> StoragePool:
    pool = s.query(StoragePool).filter_by(name=name).one_or_none()
    if pool is None:
        raise NotFound(f"storage pool {name} not found (`corral storage pool list`)",
                       field="pool")
    return pool


def check_ready(pool: StoragePool) -> None:
    if pool.status != READY:
        raise Conflict(f"storage pool {pool.name} is {pool.status}, not ready", field="pool")


def agent_body(pool: StoragePool, marker: Marker = "write") -> PoolBody:
    # Validated, not built: the row's type is a str, the body's one of dir | shared | rbd.
    return PoolBody.model_validate({"type": pool.type, "id": pool.id or "", "path": pool.path,
                                    "ceph_conf": pool.ceph_conf, "ceph_pool": pool.ceph_pool,
                                    "marker": marker})


def host_ids(s: Session, pool: StoragePool) -> list[str]:
    """The hosts a pool is set up on: its one host (dir), else every host that is up."""
    if pool.host_id is not None:
        return [pool.host_id]
    return [h.id for h in s.query(Host).filter_by(status="up").order_by(Host.name)]


def agent_for(ctx: EngineContext, pool: StoragePool) -> AgentClient:
    """An agent that can work on the pool's volumes."""
    if pool.host_id is not None:
        return ctx.agent(pool.host_id)
    return ctx.agent(pick_host(ctx, 0).id)


def check_room(ctx: EngineContext, pool: StoragePool, need: int, what: str, field: str) -> None:
    """A new disk of ``need`` bytes (virtual) fits in the pool's free space, times the
    engine's ``storage_overcommit`` (thin provisioning); else 409 insufficient_resources."""
    free = agent_for(ctx, pool).pool_stats(pool.name).available
    room = int(free * ctx.settings.storage_overcommit)
    if need > room:
        more = (f" ({ctx.settings.storage_overcommit:g}x overcommit)"
                if ctx.settings.storage_overcommit != 1 else "")
        raise InsufficientResources(
            f"pool {pool.name} is too full for {what}: it needs {need >> 20} MiB, "
            f"{free >> 20} MiB free{more}", field=field, pool=pool.name, needed=need,
            available=free)


def usable_on(pool: StoragePool, host_id: str | None) -> bool:
    """Whether a VM on ``host_id`` can open the pool's volumes."""
    return pool.host_id is None or pool.host_id == host_id


def stats(ctx: EngineContext, pool: StoragePool) -> PoolStats | None:
    """Capacity, allocation and free bytes from a host; None when none answers."""
    if pool.status == CREATING:
        return None
    try:
        return agent_for(ctx, pool).pool_stats(pool.name)
    except CorralError as exc:
        log.warning("pool %s: no stats: %s", pool.name, exc.message)
        return None


def to_api(s: Session, pool: StoragePool, st: PoolStats | None = None) -> PoolOut:
    host = s.get(Host, pool.host_id) if pool.host_id else None
    return PoolOut(
        name=pool.name, type=PoolType(pool.type), status=pool.status, path=pool.path,
        ceph_conf=pool.ceph_conf, ceph_pool=pool.ceph_pool, host=host.name if host else None,
        capacity=st.capacity if st else None, allocation=st.allocation if st else None,
        available=st.available if st else None,
        volumes=s.query(Volume).filter_by(pool_id=pool.id).count(), created_at=pool.created_at,
    )


def list_pools(ctx: EngineContext) -> list[PoolOut]:
    with ctx.db.session() as s:
        rows = list(s.query(StoragePool).order_by(StoragePool.name))
        return [to_api(s, p, stats(ctx, p)) for p in rows]


def get(ctx: EngineContext, name: str) -> PoolOut:
    with ctx.db.session() as s:
        pool = find(s, name)
        return to_api(s, pool, stats(ctx, pool))


# -- create --------------------------------------------------------------------------------

def _check_conflicts(s: Session, row: StoragePool) -> None:
    if s.query(StoragePool).filter_by(name=row.name).count():
        raise Conflict(f"storage pool {row.name} already exists", field="name")
    for other in s.query(StoragePool).order_by(StoragePool.name):
        if row.path is not None and other.path == row.path and (
                row.host_id is None or other.host_id is None or other.host_id == row.host_id):
            raise Conflict(f"path {row.path} is storage pool {other.name}'s", field="path")
        if (row.ceph_pool is not None and other.ceph_pool == row.ceph_pool
                and other.ceph_conf == row.ceph_conf):
            raise Conflict(f"Ceph pool {row.ceph_pool} is storage pool {other.name}'s",
                           field="ceph_pool")


def create(ctx: EngineContext, req: PoolCreate) -> Operation:
    host = pick_host(ctx, 0)
    path = req.path
    if req.type == PoolType.DIR and path is None:
        path = f"{host.facts['storage_dir']}/pools/{req.name}"
    row = StoragePool(
        name=req.name, type=req.type.value, path=path,
        ceph_conf=(req.ceph_conf or DEFAULT_CEPH_CONF) if req.type == PoolType.RBD else None,
        ceph_pool=req.ceph_pool, host_id=host.id if req.type == PoolType.DIR else None,
        status=CREATING,
    )
    with ctx.db.session() as s:
        _check_conflicts(s, row)
    # Not a system or corral directory, not inside or around another pool (corral.safepaths).
    if row.path is not None:
        host_files.check_pool_path(ctx, row.path, row.host_id)
    if row.ceph_conf is not None:
        host_files.check_ceph_conf(ctx, row.ceph_conf)
    with ctx.db.session() as s:
        hosts = [row.host_id] if row.host_id else \
            [h.id for h in s.query(Host).filter_by(status="up").order_by(Host.name)]
    body = agent_body(row)
    for host_id in hosts:  # each host's dry run: nothing is made yet
        ctx.agent(host_id).check_pool(req.name, body)
    with ctx.db.session() as s:
        claims.serialize(s, StoragePool)  # no other create between this check and our row
        _check_conflicts(s, row)  # again: a concurrent create may have won meanwhile
        s.add(row)
        with claims.unique(f"storage pool {req.name} was just created by a concurrent request",
                           field="name"):
            s.flush()
        pool_id = row.id
    ctx.bus.publish("pool", {"name": req.name, "status": CREATING})
    return ctx.ops.submit("pool.create", {"pools": [req.name]}, {"pool_id": pool_id},
                          [f"pool:{req.name}"], host_id=row.host_id)


def _set_up(ctx: EngineContext, op: OpContext, name: str, hosts: list[str], writes: PoolBody,
            verifies: PoolBody) -> PoolSetup:
    """Set the pool up on every host, or on none. The first host alone first: it writes a
    shared pool's marker, which the others (at once, in parallel) must then read back. Its
    answer carries the driver's facts (an rbd pool's monitors: the same for every host)."""

    def verify(agent: AgentClient) -> PoolSetup:
        return agent.ensure_pool(name, verifies)

    def forget(agent: AgentClient) -> Deleted:
        return agent.forget_pool(name)

    op.progress(5, "setting up on the first host")
    try:
        facts = ctx.agent(hosts[0]).ensure_pool(name, writes)
        put_on_hosts(ctx, op, [(h, verify) for h in hosts[1:]], forget, "setting up")
    except CorralError:
        # All or none: the first host too (a failed setup of its own may have done part).
        with contextlib.suppress(CorralError):
            forget(ctx.agent(hosts[0]))
        raise
    return facts


def execute_create(ctx: EngineContext, op: OpContext) -> None:
    with ctx.db.session() as s:
        row = s.get(StoragePool, op.params["pool_id"])
        if row is None:
            return
        name, hosts = row.name, host_ids(s, row)
        writes, verifies = agent_body(row, "write"), agent_body(row, "verify")
    try:
        if not hosts:
            raise Unavailable("no host is up to set the pool up on")
        facts = _set_up(ctx, op, name, hosts, writes, verifies)
    except CorralError:
        with ctx.db.session() as s:
            row = s.get(StoragePool, op.params["pool_id"])
            if row is not None:
                s.delete(row)
        ctx.bus.publish("pool", {"name": name, "status": "deleted"})
        raise
    with ctx.db.session() as s:
        row = s.get(StoragePool, op.params["pool_id"])
        if row is not None:
            row.status = READY
            if facts.monitors:
                row.monitors = [list(m) for m in facts.monitors]
    ctx.bus.publish("pool", {"name": name, "status": READY})


def ensure_default(ctx: EngineContext) -> PoolOut:
    """The ``default`` dir pool of `corral up`: the local agent's storage dir (where its
    images/ and vms/ are), set up on the agent every start (idempotent)."""
    host = pick_host(ctx, 0)
    with ctx.db.session() as s:
        row = s.query(StoragePool).filter_by(name=DEFAULT_POOL).one_or_none()
        if row is None:
            row = StoragePool(name=DEFAULT_POOL, type="dir", path=str(host.facts["storage_dir"]),
                              host_id=host.id, status=READY)
            s.add(row)
            s.flush()
        body = agent_body(row)
        host_id = row.host_id or host.id
    st = ctx.agent(host_id).ensure_pool(DEFAULT_POOL, body)
    with ctx.db.session() as s:
        return to_api(s, find(s, DEFAULT_POOL), st)


# -- delete --------------------------------------------------------------------------------

def delete(ctx: EngineContext, name: str) -> Operation:
    with ctx.db.session() as s:
        row = find(s, name)
        claims.hold(s, row)  # a volume or VM root created in it at the same moment
        if name == DEFAULT_POOL:
            raise Conflict("the default pool holds this host's images and VM root disks; "
                           "it cannot be deleted", field="pool")
        vols = sorted(v.name for v in s.query(Volume).filter_by(pool_id=row.id))
        if vols:
            shown = ", ".join(vols[:10]) + (" ..." if len(vols) > 10 else "")
            raise Conflict(f"storage pool {name} is in use: it holds {len(vols)} volume(s): "
                           f"{shown}; delete them first", field="pool", volumes=vols)
        roots = sorted(n for (n,) in s.query(Vm.name).filter(Vm.root_pool_id == row.id))
        if roots:
            raise Conflict(f"storage pool {name} is in use: it holds the root disks of VMs "
                           f"{', '.join(roots)}; delete them first", field="pool", vms=roots)
        check_ready(row)
        row.status = DELETING
        pool_id, host_id = row.id, row.host_id
    ctx.bus.publish("pool", {"name": name, "status": DELETING})
    return ctx.ops.submit("pool.delete", {"pools": [name]}, {"pool_id": pool_id},
                          [f"pool:{name}"], host_id=host_id)


def execute_delete(ctx: EngineContext, op: OpContext) -> None:
    with ctx.db.session() as s:
        row = s.get(StoragePool, op.params["pool_id"])
        if row is None:
            return
        name, hosts = row.name, host_ids(s, row)
    for i, host_id in enumerate(hosts):
        op.progress(10 + 80 * i // max(1, len(hosts)), f"removing from host {i + 1}")
        try:
            ctx.agent(host_id).forget_pool(name)
        except CorralError:
            with ctx.db.session() as s:  # still there: usable again, the error says why
                row = s.get(StoragePool, op.params["pool_id"])
                if row is not None:
                    row.status = READY
            raise
    with ctx.db.session() as s:
        row = s.get(StoragePool, op.params["pool_id"])
        if row is not None:
            s.delete(row)
    ctx.bus.publish("pool", {"name": name, "status": "deleted"})


def register(ctx: EngineContext) -> None:
    ctx.ops.register("pool.create", lambda op: execute_create(ctx, op),
                     undo=op_undo.delete_row(ctx, StoragePool, "pool_id", event="pool"))
    ctx.ops.register("pool.delete", lambda op: execute_delete(ctx, op),
                     undo=op_undo.set_fields(ctx, StoragePool, "pool_id", status=READY))
