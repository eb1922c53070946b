"""Offline migration of a stopped VM to another host (``corral vm migrate NAME --offline``).

Everything is checked before anything moves (:func:`check`): the VM is stopped, its host's
agent answers (up, or in maintenance: an evacuation moves stopped VMs off it), its disks are
on shared or rbd pools (nothing to copy) or its root disk is in the host's own storage (an
overlay over its image: copied), no attached volume is in a dir pool, it has no snapshots
(libvirt's metadata of them stays on a host) and no TPM (swtpm's state is not moved yet),
and the target is up, not its host, and passes every hard rule of the scheduler (the VM
counts there as placed: a stopped VM's room is promised); without ``to`` the scheduler picks.

The operation (``vm.migrate`` with ``offline``, lock ``vm:NAME``; the VM stays ``stopped``
and the lock keeps every other operation off it) then copies everything to the target, in
this order: the image (image_copies), the root disk and the UEFI variables (relayed by the
engine from the source agent's GET into the target agent's PUT, SHA-256 checked there,
progress in bytes, ``bandwidth_mib_s`` caps it, a cancel stops it between chunks), the
cloud-init seed, the domain's definition; then the row names the target, and only then the
source undefines the domain and deletes its disk, NVRAM, seed and ports. Before the switch a
failure or a cancel removes what the target got and the source keeps everything; after it,
nothing is undone (the VM is on the target) and what the source could not delete is named.
Ports need no push: a start pushes the VM's ports on its host (vms.execute_power).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from corral.agent_api.vm_files import VmFileKind
from corral.api import Operation as OperationOut
from corral.api import VmState
from corral.api.migration import VmMigrate
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Nic, StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.services import (
    image_copies,
    security_groups,
    vm_cloudinit,
    vm_design,
    vm_migration,
)
from corral.engine.services.vm_lookup import find_vm
from corral.errors import Conflict, CorralError, InvalidInput, NotFound, WrongState

log = logging.getLogger(__name__)

SOURCE_STATES = frozenset({"up", "maintenance"})  # its agent answers: it gives the files
THROTTLE_MAX_S = 5.0  # the longest pause of a capped copy between two chunks


# -- checks before anything moves --------------------------------------------------------------

def _check_request(req: VmMigrate) -> None:
    if req.postcopy:
        raise InvalidInput("postcopy is for a live migration: an offline one copies the "
                           "stopped VM's files", field="postcopy")
    if req.max_downtime_ms is not None:
        raise InvalidInput("max_downtime_ms is for a live migration: a stopped VM has no "
                           "downtime", field="max_downtime_ms")


def _check_vm(s: Session, vm: Vm) -> Host:
    """The VM's host; 409 when the VM cannot move offline as it is."""
    if vm.state != VmState.STOPPED.value:
        hint = ("stop it first, or migrate it live (without --offline)"
                if vm.state in (VmState.RUNNING.value, VmState.PAUSED.value)
                else "wait for its operation to end, or stop it")
        raise WrongState(f"VM {vm.name} is {vm.state}: an offline migration moves a stopped "
                         f"VM ({hint})", state=vm.state)
    source = s.get(Host, vm.host_id) if vm.host_id else None
    if source is None:
        raise WrongState(f"VM {vm.name} is on no host")
    if source.status not in SOURCE_STATES:
        raise Conflict(f"the host of VM {vm.name}, {source.name}, is {source.status}: its "
                       "agent gives the VM's files, it must be up", field="host")
    if vm_design.hardware_of(vm).tpm:
        raise Conflict(f"VM {vm.name} has a TPM: its state is not moved by an offline "
                       "migration yet", field="hardware.tpm")
    root = vm_design.root_pool(s, vm)
    local: list[str] = []
    if root is not None and root.type not in vm_migration.SHARED_POOL_TYPES:
        local.append(f"its root disk (in dir pool {root.name})")
    rows = (s.query(Volume.name, StoragePool.name, StoragePool.type)
            .join(StoragePool, Volume.pool_id == StoragePool.id)
            .filter(Volume.vm_id == vm.id, Volume.target.isnot(None)))
    local.extend(f"volume {pool}/{vol}" for vol, pool, kind in rows
                 if kind not in vm_migration.SHARED_POOL_TYPES)
    if local:
        raise Conflict(f"VM {vm.name} cannot move offline with {', '.join(local)}: a root "
                       "disk in the host's own storage is copied, disks on a shared or rbd "
                       "pool move as they are; detach or move the others first",
                       field="storage")
    return source


def _image_base(s: Session, vm: Vm, facts: dict[str, Any]) -> str | None:
    """The path a root disk in the host's storage is over there (None: a blank disk)."""
    img = s.get(Image, vm.image_id)
    if img is None or img.format == "iso":
        return None
    return f"{facts['storage_dir']}/images/{img.name}.qcow2"


def _check_source_files(source: AgentClient, name: str, host: str, copy_root: bool,
                        base: str | None) -> None:
    """What only the source's agent knows: no snapshots, a root disk over the image."""
    snaps = [snap.name for snap in source.snapshots(name)]
    if snaps:
        raise Conflict(f"VM {name} has snapshots ({', '.join(snaps)}): libvirt keeps them on "
                       f"host {host}; delete them before an offline migration",
                       field="snapshots")
    if not copy_root:
        return
    root = {f.kind: f for f in source.vm_files(name).files}.get("root")
    if root is None:
        raise NotFound(f"the root disk of VM {name} is not on host {host}", field="vm")
    if root.backing is not None and root.backing != base:
        raise Conflict(f"VM {name}'s root disk is over {root.backing} (a linked clone's "
                       "frozen base), not over its image: only a disk over its image is "
                       "copied", field="storage")


def check(ctx: EngineContext, name: str, req: VmMigrate) -> vm_migration.Plan:
    """Every precondition of moving stopped VM ``name`` offline; raises the 4xx that names
    the first that fails."""
    _check_request(req)
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        source = _check_vm(s, vm)
        if req.to is not None and req.to == source.name:
            raise Conflict(f"VM {vm.name} is on host {req.to} already: name another host",
                           field="to")
        target = vm_migration.pick_target(ctx, s, vm, source, req.to)
        plan = vm_migration.Plan(vm.id, source.id, source.name, target.id, target.name)
        copy_root, base = vm.root_pool_id is None, _image_base(s, vm, source.facts or {})
    _check_source_files(ctx.agent(plan.source_id), name, plan.source, copy_root, base)
    return plan


def migrate(ctx: EngineContext, name: str, req: VmMigrate,
            reason: str | None = None) -> OperationOut:
    plan = check(ctx, name, req)
    params: dict[str, Any] = {
        "offline": True, "vm_id": plan.vm_id, "source_id": plan.source_id,
        "target_id": plan.target_id, "bandwidth_mib_s": req.bandwidth_mib_s}
    if reason:
        params["reason"] = reason
    # The target judged again as it is recorded, as for a live migration (the moves
    # submitted before count there): two moves that each fit alone never overbook it.
    return ctx.ops.submit(vm_migration.TYPE, {"vms": [name], "hosts": [plan.target]}, params,
                          [f"vm:{name}"], host_id=plan.source_id, message=reason,
                          claim=lambda s: vm_migration._still_room(ctx, s, plan))


# -- the operation -----------------------------------------------------------------------------

def prereq(ctx: EngineContext, op: OpContext) -> None:
    """Under the lock: the VM is still there and stopped (or moved by an earlier run)."""
    with ctx.db.session() as s:
        vm = s.get(Vm, op.params["vm_id"])
        if vm is None:
            raise NotFound(f"VM {op.params['vm_id']} no longer exists")
        if vm.host_id != op.params["target_id"] and vm.state != VmState.STOPPED.value:
            raise WrongState(f"VM {vm.name} is {vm.state} now: an offline migration moves "
                             "a stopped VM", state=vm.state)


@dataclass
class _Move:
    """One offline migration as the executor carries it from step to step."""

    vm_id: str
    name: str
    source_id: str
    target_id: str
    source: str
    target: str
    macs: list[str]
    has_seed: bool
    copy_root: bool  # the root disk is in the source's own storage: copied
    image: str | None  # the image a copied root disk is over (None: a blank disk)
    base: str | None  # its path on the source
    made: list[VmFileKind] = field(default_factory=list)  # files the target got
    seeded: bool = False
    defined: bool = False


def _load(ctx: EngineContext, op: OpContext) -> tuple[_Move, bool]:
    """(the move, whether an earlier run recorded it already)."""
    p = op.params
    with ctx.db.session() as s:
        vm = s.get(Vm, p["vm_id"])
        if vm is None:
            raise NotFound(f"VM {p['vm_id']} no longer exists")
        source, target = s.get(Host, p["source_id"]), s.get(Host, p["target_id"])
        if source is None or target is None:
            raise NotFound("a host of this migration was removed", field="to")
        img = s.get(Image, vm.image_id)
        image = img.name if img is not None and img.format != "iso" else None
        move = _Move(vm.id, vm.name, source.id, target.id, source.name, target.name,
                     [n.mac for n in s.query(Nic).filter_by(vm_id=vm.id)],
                     vm.cloud_init is not None, vm.root_pool_id is None, image,
                     _image_base(s, vm, source.facts or {}))
        return move, vm.host_id == target.id


def execute(ctx: EngineContext, op: OpContext) -> None:
    move, done = _load(ctx, op)
    if done:  # an engine that restarted after the switch: finish the source's side
        _forget_source(ctx, op, move, 0)
        return
    source, target = ctx.agent(move.source_id), ctx.agent(move.target_id)
    _clear_leftovers(source, target, move)
    try:
        op.progress(2, f"preparing {move.target}")
        image_copies.ensure_for_vm(ctx, op, move.vm_id, span=(2, 10), host_id=move.target_id)
        op.check_cancelled()
        copied = _copy_files(op, source, target, move)
        op.check_cancelled()
        if move.has_seed:
            move.seeded = True  # before the call: a write cut midway may leave a file
            vm_cloudinit.push_seed(ctx, target, move.vm_id)
        op.progress(92, f"defining VM {move.name} on {move.target}")
        xml = vm_design.domain_xml(ctx, move.vm_id, move.target_id)[2]
        op.check_cancelled()
        move.defined = True
        target.define(move.name, xml)
        op.check_cancelled()  # the last point a cancel stops it: next, the row moves
    except Exception:  # whatever broke: the target keeps nothing of a move not made
        _clean_target(target, move)
        raise
    with ctx.db.session() as s:
        vm = s.get(Vm, move.vm_id)
        if vm is not None:
            vm.host_id = move.target_id
    _forget_source(ctx, op, move, copied)


def _clear_leftovers(source: AgentClient, target: AgentClient, move: _Move) -> None:
    """What an interrupted run of this migration left on the target (the row still names
    the source: the source's copy is the VM), removed; never a root disk the source lacks."""
    there = _state(target, move.name)
    if there in ("running", "paused"):
        raise Conflict(f"a domain named {move.name} runs on host {move.target}: nothing is "
                       "moved", field="to")
    made = [f.kind for f in target.vm_files(move.name).files
            if f.kind == "nvram" or move.copy_root]
    if "root" in made and "root" not in {f.kind for f in source.vm_files(move.name).files}:
        raise Conflict(f"the root disk of VM {move.name} is on host {move.target}, not on "
                       f"{move.source} where its row says: nothing is moved or deleted",
                       field="vm")
    _clean_target(target, _Move(**{**move.__dict__, "defined": there is not None,
                                   "seeded": move.has_seed, "made": made}))


def _state(agent: AgentClient, name: str) -> str | None:
    """The state of domain ``name`` on the agent's host; None: no such domain."""
    try:
        return str(agent.domain(name).state)
    except NotFound:
        return None


def _copy_files(op: OpContext, source: AgentClient, target: AgentClient,
                move: _Move) -> int:
    """The root disk (if in the host's storage) and the NVRAM (if any) onto the target;
    the bytes copied."""
    op.progress(10, f"hashing the files of VM {move.name} on {move.source}")
    listed = {f.kind: f for f in source.vm_files(move.name, digest=True).files}
    files = [f for f in (listed.get("root") if move.copy_root else None, listed.get("nvram"))
             if f is not None]
    if move.copy_root:
        root = listed.get("root")
        if root is None:
            raise NotFound(f"the root disk of VM {move.name} is not on host {move.source}",
                           field="vm")
        if root.backing is not None and root.backing != move.base:
            raise Conflict(f"VM {move.name}'s root disk is over {root.backing}, not over its "
                           "image: it is not copied", field="storage")
    meter = _Meter(op, sum(f.size for f in files), op.params.get("bandwidth_mib_s"),
                   f"copying VM {move.name} from {move.source} to {move.target}")
    for f in files:
        assert f.sha256 is not None
        move.made.append(f.kind)  # before the PUT: a cut one may leave a file to remove
        with source.read_vm_file(move.name, f.kind) as chunks:
            target.put_vm_file(move.name, f.kind, f.size, f.sha256, meter.counting(chunks),
                               image=move.image if f.kind == "root" else None)
    return meter.done


def _clean_target(target: AgentClient, move: _Move) -> None:
    """What the target got of a move that did not happen (the source keeps everything)."""
    if move.defined:
        with contextlib.suppress(CorralError):
            target.undefine(move.name)
    for kind in move.made:
        with contextlib.suppress(CorralError):
            target.delete_vm_file(move.name, kind)
    if move.seeded:
        with contextlib.suppress(CorralError):
            target.delete_seed(move.name)


def _forget_source(ctx: EngineContext, op: OpContext, move: _Move, copied: int) -> None:
    """The row names the target: the source's definition, files, seed and ports go."""
    source = ctx.agent(move.source_id)
    left: list[str] = []
    steps: list[tuple[str, Callable[[], object]]] = [
        ("its definition", lambda: source.undefine(move.name)),
        ("its NVRAM", lambda: source.delete_vm_file(move.name, "nvram"))]
    if move.copy_root:
        steps.append(("its root disk", lambda: source.delete_disk(move.name)))
    if move.has_seed:
        steps.append(("its cloud-init seed", lambda: source.delete_seed(move.name)))
    for what, step in steps:
        try:
            step()
        except CorralError as exc:
            log.warning("offline migration of VM %s: %s stays on host %s: %s", move.name,
                        what, move.source, exc)
            left.append(what)
    security_groups.drop_ports_of(source, move.macs)
    said = f"moved offline from {move.source} to {move.target}"
    if copied:
        said += f" ({_amount(copied)} copied)"
    if op.params.get("reason"):
        said += f" ({op.params['reason']})"
    if left:
        said += f"; left on {move.source}, to remove by hand: {', '.join(left)}"
    op.progress(99, said)
    ctx.bus.publish("vm", {"name": move.name, "state": VmState.STOPPED.value,
                           "event": "migrated", "offline": True, "from": move.source,
                           "to": move.target, "operation": op.id})


class _Meter:
    """The copy's progress in bytes on the operation (a few updates, each a database write),
    its cap of ``bandwidth_mib_s``, and the cancel checked between chunks."""

    SPAN = (10, 90)

    def __init__(self, op: OpContext, total: int, bandwidth_mib_s: int | None,
                 doing: str) -> None:
        self.op, self.total, self.doing = op, total, doing
        self.rate = bandwidth_mib_s * (1 << 20) if bandwidth_mib_s else None
        self.done = 0
        self._shown = -1
        self._start = time.monotonic()

    def counting(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.op.check_cancelled()  # the target drops the cut file
            self.done += len(chunk)
            self._show()
            yield chunk
            self._throttle()

    def _throttle(self) -> None:
        if self.rate is None:
            return
        ahead = self.done / self.rate - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(min(ahead, THROTTLE_MAX_S))

    def _show(self) -> None:
        part = self.done * 20 // max(1, self.total)  # every 5 %
        if part != self._shown:
            self._shown = part
            lo, hi = self.SPAN
            self.op.progress(lo + (hi - lo) * self.done // max(1, self.total),
                             f"{self.doing}: {_amount(self.done)} of {_amount(self.total)}")


def _amount(size: int) -> str:
    """Bytes as a person reads them: MiB, or KiB below one (a fresh overlay is small)."""
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
