"""Live migration of a running VM to another host (``corral vm migrate``).

Everything is checked before anything moves (:func:`check`): the VM runs, its domain is as
its rows say (no pending settings: the target's domain is designed from the rows), its
disks are on shared or rbd pools, but a root disk in the host's own storage with
``copy_storage`` (the target gets the same overlay over the image, QEMU copies the VM's own
layer during the migration), the target is up, not its host, and passes every hard rule of
the scheduler (room, pools, networks, CPU model, groups, tags); without ``to`` the
scheduler picks among the other hosts.

The operation (locks ``vm:NAME``) then brings the image's boot files and the cloud-init
seed to the target, pushes the NICs' ports (security groups, anti-spoofing, QoS: set by
tap name, so they are in place before the guest resumes there), and runs the migration
as a job of the SOURCE host's agent (corral.agent.hypervisor.migration: peer to peer,
the source's libvirtd connects to the target's), its progress relayed. Then the VM's row
names the target, the source's ports and seed go, and an event records from, to and the
downtime. A failure or a cancel (``abortJob``) leaves the guest running on the source and
the row as it was; the target keeps nothing.

Never two copies: whenever the outcome is in doubt (an error, a cancel racing the end, an
engine that restarted mid-migration) both hosts are asked where the domain is, and the row
follows the one that runs it. The reconciler keeps off a VM while a migration of it is
pending or running (:func:`in_flight`), even an interrupted one no engine runs yet.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from lxml import etree
from sqlalchemy.orm import Session

from corral.agent_api.migration import MigrateBody, Migrated
from corral.api import Operation as OperationOut
from corral.api import VmState
from corral.api.migration import VmMigrate
from corral.api.scheduling import Placement as PlacementOut
from corral.engine.agent_client import AgentClient
from corral.engine.agent_jobs import run_job
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Nic, Operation, StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.oprows import ACTIVE
from corral.engine.scheduler import insufficient, place
from corral.engine.scheduler.placement import Placement
from corral.engine.services import (
    image_copies,
    migration_transport,
    security_groups,
    vm_cloudinit,
    vm_design,
    vm_offline_migration,
    vm_scheduling,
)
from corral.engine.services.migration_transport import Transport
from corral.engine.services.vm_lookup import find_vm
from corral.errors import (
    Conflict,
    CorralError,
    InsufficientResources,
    NotFound,
    WrongState,
)

TYPE = "vm.migrate"
JOB_TIMEOUT_S = 6 * 3600.0
SHARED_POOL_TYPES = frozenset({"shared", "rbd"})


@dataclass(frozen=True)
class Plan:
    vm_id: str
    source_id: str
    source: str
    target_id: str
    target: str
    # How it travels (migration_transport: network, TLS, convergence limit)
    transport: Transport | None = None


# -- checks before anything moves --------------------------------------------------------------

def _check_vm(s: Session, vm: Vm, copy_storage: bool) -> Host:
    """The VM's host; 409 when the VM cannot move live as it is."""
    if vm.state != VmState.RUNNING.value:
        hint = ("move it with --offline (offline: true)" if vm.state == VmState.STOPPED.value
                else "start it, or wait for its operation to end")
        raise WrongState(f"VM {vm.name} is {vm.state}: a live migration moves a running VM "
                         f"({hint})")
    source = s.get(Host, vm.host_id) if vm.host_id else None
    if source is None:
        raise WrongState(f"VM {vm.name} is on no host")
    # In maintenance too: an evacuation marks its host first (nothing new lands on it),
    # then moves its VMs off; the agent of a host in maintenance still answers.
    if source.status not in ("up", "maintenance"):
        raise Conflict(f"the host of VM {vm.name}, {source.name}, is {source.status}: its "
                       "agent runs the migration, it must be up", field="host")
    pending = vm_design.pending(vm)
    if pending:
        raise Conflict(f"VM {vm.name} has settings that apply at its next start "
                       f"({', '.join(pending)}): restart it before moving it (the target "
                       "runs the domain as its settings say)")
    _check_storage(s, vm, source, copy_storage)
    return source


def _check_storage(s: Session, vm: Vm, source: Host, copy_storage: bool) -> None:
    """Every disk must be reachable from every host, but a root disk in the host's own
    storage with ``copy_storage`` (copied during the migration)."""
    root = vm_design.root_pool(s, vm)
    if root is None and not copy_storage:
        raise Conflict(f"VM {vm.name}'s root disk is on host {source.name}'s own storage: "
                       "moving it needs a storage copy (--copy-storage, copy_storage: true)",
                       field="copy_storage")
    local: list[str] = []
    if root is not None and root.type not in SHARED_POOL_TYPES:
        local.append(f"its root disk (in dir pool {root.name})")
    rows = (s.query(Volume.name, StoragePool.name, StoragePool.type)
            .join(StoragePool, Volume.pool_id == StoragePool.id)
            .filter(Volume.vm_id == vm.id, Volume.target.isnot(None)))
    local.extend(f"volume {pool}/{vol}" for vol, pool, kind in rows
                 if kind not in SHARED_POOL_TYPES)
    if local:
        raise Conflict(f"VM {vm.name} cannot move without copying {', '.join(local)}: only "
                       "a root disk in the host's own storage is copied yet; disks on a "
                       "shared or rbd pool move as they are", field="storage")


def pick_target(ctx: EngineContext, s: Session, vm: Vm, source: Host, to: str | None) -> Host:
    """Host ``to`` if it may take the VM, else where the scheduler puts it (its own host
    excluded, its allocation counted as placed there); the 4xx that says why not."""
    if to is not None:
        target = s.query(Host).filter_by(name=to).one_or_none()
        if target is None:
            raise NotFound(f"host {to} not found (`corral host list`)", field="to")
        if target.id == source.id:
            raise Conflict(f"VM {vm.name} already runs on host {to}: name another host",
                           field="to")
        if target.status != "up":
            raise Conflict(f"host {to} is {target.status}: a migration target must be up",
                           field="to")
    p = _placement(ctx, s, vm, source, to)
    if p.chosen is None:
        raise _refusal(p, vm.name, to)
    return s.query(Host).filter_by(name=p.chosen).one()


def _placement(ctx: EngineContext, s: Session, vm: Vm, source: Host, to: str | None
               ) -> Placement:
    """How every other host is judged for the VM: its own allocation left out (it leaves
    its host), its host never a candidate."""
    request = vm_scheduling.vm_request(s, vm, to)
    views = [v for v in vm_scheduling.host_views(s, request, skip_vm=vm.id)
             if v.name != source.name]
    return place(views, request, vm_scheduling.policy(ctx))


def explain(ctx: EngineContext, name: str, to: str | None) -> PlacementOut:
    """The dry run of a migration (`corral vm migrate --explain`): where the VM would go
    and how every other host was judged; nothing moves."""
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        source = s.get(Host, vm.host_id) if vm.host_id else None
        if source is None:
            raise WrongState(f"VM {vm.name} is on no host")
        return vm_scheduling.to_api(_placement(ctx, s, vm, source, to), vm.name,
                                    current=source.name)


def _refusal(p: Placement, vm: str, to: str | None) -> InsufficientResources:
    if to is None:
        exc = insufficient(p)
        exc.message = exc.message.replace("no host can take", "no other host can take", 1)
        return exc
    reasons = [str(r) for v in p.verdicts if v.host.name == to for r in v.reasons]
    return InsufficientResources(f"host {to} cannot take VM {vm}: {'; '.join(reasons)}",
                                 field="to", request=p.request.describe(),
                                 hosts={to: reasons})


def check(ctx: EngineContext, name: str, to: str | None, copy_storage: bool = False) -> Plan:
    """Every precondition of moving VM ``name`` (to ``to``, or where the scheduler says);
    raises the 4xx that names the first that fails."""
    cfg = migration_transport.settings(ctx)
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        source = _check_vm(s, vm, copy_storage)
        target = pick_target(ctx, s, vm, source, to)
        way = migration_transport.transport(target, cfg)  # 409: no address in its network
        return Plan(vm.id, source.id, source.name, target.id, target.name, way)


def migrate(ctx: EngineContext, name: str, req: VmMigrate,
            reason: str | None = None) -> OperationOut:
    """``reason``: why the engine moves it by itself (the balancer): the operation says so
    from the start, and its last message too. ``req.offline``: a stopped VM's move
    (vm_offline_migration), the same operation type."""
    if req.offline:
        return vm_offline_migration.migrate(ctx, name, req, reason)
    plan = check(ctx, name, req.to, req.copy_storage)
    params: dict[str, Any] = {
        "vm_id": plan.vm_id, "source_id": plan.source_id, "target_id": plan.target_id,
        "max_downtime_ms": req.max_downtime_ms, "bandwidth_mib_s": req.bandwidth_mib_s,
        "postcopy": req.postcopy, "copy_storage": req.copy_storage,
        "transport": plan.transport.params() if plan.transport else None}
    if reason:
        params["reason"] = reason
    return ctx.ops.submit(TYPE, {"vms": [name], "hosts": [plan.target]}, params,
                          [f"vm:{name}"], host_id=plan.source_id, message=reason,
                          claim=lambda s: _still_room(ctx, s, plan))


def _still_room(ctx: EngineContext, s: Session, plan: Plan) -> None:
    """The target judged again as the operation is recorded, no other submit in between:
    the migrations submitted before count there (vm_scheduling.host_views), so two that
    each fit alone cannot both be let in where only one fits."""
    vm, source = s.get(Vm, plan.vm_id), s.get(Host, plan.source_id)
    if vm is None or source is None:
        raise NotFound(f"VM {plan.vm_id} or its host no longer exists")
    p = _placement(ctx, s, vm, source, plan.target)
    if p.chosen is None:
        raise _refusal(p, vm.name, plan.target)


def in_flight(s: Session) -> set[str]:
    """Names of the VMs a migration is pending or running for (an interrupted one too): the
    reconciler leaves them to it."""
    rows = s.query(Operation.resources).filter(Operation.type == TYPE,
                                               Operation.status.in_(ACTIVE))
    return {name for (res,) in rows for name in (res or {}).get("vms", [])}


# -- the operation -----------------------------------------------------------------------------

def prereq(ctx: EngineContext, op: OpContext) -> None:
    """Under the lock: the VM is still there and running (a resumed run may find it moved)."""
    if op.params.get("offline"):
        vm_offline_migration.prereq(ctx, op)
        return
    with ctx.db.session() as s:
        vm = s.get(Vm, op.params["vm_id"])
        if vm is None:
            raise NotFound(f"VM {op.params['vm_id']} no longer exists")
        if vm.state != VmState.RUNNING.value:
            raise WrongState(f"VM {vm.name} is {vm.state} now: a live migration moves a "
                             "running VM")


def _where(source: AgentClient, target: AgentClient, name: str) -> str | None:
    """``target`` when the guest runs there and the source no longer has it, ``source``
    when it still runs on the source, None when neither can say."""
    on_source = _state(source, name)
    on_target = _state(target, name)
    if on_target in ("running", "paused") and on_source in (None, "stopped"):
        return "target"
    if on_source in ("running", "paused"):
        return "source"
    return None


def _state(agent: AgentClient, name: str) -> str | None:
    try:
        return agent.domain(name).state
    except CorralError:
        return None


@dataclass(frozen=True)
class _Move:
    """One migration as the executor carries it from step to step."""

    vm_id: str
    name: str
    source_id: str
    target_id: str
    macs: list[str]
    has_seed: bool
    copy_root: bool  # the root disk is in the source's own storage: copied


def execute(ctx: EngineContext, op: OpContext) -> None:
    if op.params.get("offline"):
        vm_offline_migration.execute(ctx, op)
        return
    p = op.params
    # As the cluster's settings were when it was asked (an older operation: as they are now)
    cfg = None if p.get("transport") else migration_transport.settings(ctx)
    with ctx.db.session() as s:
        vm = s.get(Vm, p["vm_id"])
        if vm is None:
            raise NotFound(f"VM {p['vm_id']} no longer exists")
        if vm.host_id == p["target_id"]:  # an earlier run recorded the move already
            return
        target_host = s.get(Host, p["target_id"])
        if target_host is None or s.get(Host, p["source_id"]) is None:
            raise NotFound("a host of this migration was removed", field="to")
        image = s.get(Image, vm.image_id)
        move = _Move(vm.id, vm.name, p["source_id"], p["target_id"],
                     [n.mac for n in s.query(Nic).filter_by(vm_id=vm.id)],
                     vm.cloud_init is not None, vm.root_pool_id is None)
        nic_ids = [n.id for n in s.query(Nic).filter_by(vm_id=vm.id)]
        base = image.name if image is not None and image.format != "iso" else None
        way: dict[str, Any] = p["transport"] if cfg is None else \
            migration_transport.transport(target_host, cfg).params()
        disk_bytes, target_name = vm.disk_bytes, target_host.name
        root_there = vm_design.root_path(target_host.facts, vm.name)
    source, target = ctx.agent(move.source_id), ctx.agent(move.target_id)
    if _where(source, target, move.name) == "target":  # moved before the engine restarted
        _moved(ctx, op, move, None)
        return
    try:
        op.progress(2, f"preparing {target_name}")
        image_copies.ensure_for_vm(ctx, op, move.vm_id, span=(2, 8), host_id=move.target_id)
        op.check_cancelled()
        xml = vm_design.domain_xml(ctx, move.vm_id, move.target_id)[2]
        copy: list[str] = []
        if move.copy_root:  # the same overlay on the same base there: QEMU fills it
            target.create_disk(move.name, base, disk_bytes)
            copy = [_root_target(xml, root_there)]
        if move.has_seed:
            vm_cloudinit.push_seed(ctx, target, move.vm_id)
        # The ports first: the guest's first packet on the target already meets its rules.
        security_groups.push_nics(ctx, nic_ids, host_id=move.target_id)
        op.check_cancelled()
        op.progress(10, f"migrating to {target_name} ({_how(way)})")
        body = MigrateBody(destination=way["destination"], dest_xml=xml, persist_xml=xml,
                           migrate_uri=way["migrate_uri"], tls=way["tls"],
                           tls_hostname=way["tls_hostname"],
                           converge_timeout_s=way["converge_s"],
                           max_downtime_ms=p.get("max_downtime_ms"),
                           bandwidth_mib_s=p.get("bandwidth_mib_s"),
                           postcopy=bool(p.get("postcopy")),
                           copy_storage=bool(copy), copy_disks=copy,
                           shared_storage=True)  # check() refused every other disk
        done = run_job(source, op, source.migrate_job(move.name, body), span=(10, 97),
                       timeout=JOB_TIMEOUT_S)
    except CorralError:
        if _where(source, target, move.name) == "target":  # it moved all the same
            _moved(ctx, op, move, None)
            return
        _clean_target(target, source, move)
        raise
    _moved(ctx, op, move, done)


def _how(way: dict[str, Any]) -> str:
    """How the stream travels, as the operation says it."""
    to = str(way.get("migrate_uri", "")).removeprefix("tcp://")
    over = f" in {way['network']}" if way.get("network") else ""
    return f"{'TLS' if way.get('tls') else 'unencrypted'} to {to}{over}"


def _root_target(xml: str, path: str) -> str:
    """The device (vda) of the disk at ``path`` in the domain XML."""
    found = etree.fromstring(xml.encode()).xpath(
        "devices/disk[source/@file=$p]/target/@dev", p=path)
    if not isinstance(found, list) or not found:
        raise CorralError(f"the designed domain has no disk at {path}")
    return str(found[0])


def _clean_target(target: AgentClient, source: AgentClient, move: _Move) -> None:
    """What the target got for a migration that did not happen; a domain or a disk there
    only while the guest surely runs on the source (never the only copy)."""
    on_source = _state(source, move.name) in ("running", "paused")
    if on_source and _state(target, move.name) is not None:
        with contextlib.suppress(CorralError):
            target.act(move.name, "destroy")
        with contextlib.suppress(CorralError):
            target.undefine(move.name)
    if on_source and move.copy_root:
        with contextlib.suppress(CorralError):
            target.delete_disk(move.name)
    security_groups.drop_ports_of(target, move.macs)
    if move.has_seed:
        with contextlib.suppress(CorralError):
            target.delete_seed(move.name)


def _moved(ctx: EngineContext, op: OpContext, move: _Move, done: Migrated | None) -> None:
    """The guest runs on the target: the row follows, the source forgets it."""
    with ctx.db.session() as s:
        vm = s.get(Vm, move.vm_id)
        if vm is None:
            return
        vm.host_id = move.target_id
        source_name = (h.name if (h := s.get(Host, move.source_id)) else move.source_id)
        target_name = (h.name if (h := s.get(Host, move.target_id)) else move.target_id)
    source = ctx.agent(move.source_id)
    security_groups.drop_ports_of(source, move.macs)
    if move.has_seed:
        with contextlib.suppress(CorralError):
            source.delete_seed(move.name)
    if move.copy_root:  # its copy runs on the target now
        with contextlib.suppress(CorralError):
            source.delete_disk(move.name)
    with contextlib.suppress(CorralError):  # OVS flows need the tap, there now; remote groups
        security_groups.push_vm(ctx, move.vm_id)
    downtime = done.downtime_ms if done is not None else None
    total = done.total_ms if done is not None else None
    said = f"migrated from {source_name} to {target_name}"
    if downtime is not None:
        said += f": downtime {downtime} ms"
    if total is not None:
        said += f", total {total / 1000:.1f} s"
    way = op.params.get("transport") or {}
    tls = done.tls if done is not None else bool(way.get("tls"))
    said += ", encrypted (TLS)" if tls else ", not encrypted (migration.tls is off)"
    if op.params.get("reason"):
        said += f" ({op.params['reason']})"
    op.progress(99, said)
    ctx.bus.publish("vm", {"name": move.name, "state": VmState.RUNNING.value,
                           "event": "migrated", "from": source_name, "to": target_name,
                           "downtime_ms": downtime, "total_ms": total, "tls": tls,
                           "operation": op.id})


def register(ctx: EngineContext) -> None:
    # Cancellable while it runs: the agent's job aborts the migration (abortJob).
    ctx.ops.register(TYPE, lambda op: execute(ctx, op), prereq=lambda op: prereq(ctx, op),
                     may_cancel=True)
