"""Where a VM goes: the engine's rows as the pure scheduler's inputs (corral.engine.scheduler),
its choice, and its explanation as the API's Placement.

A host's allocation is every VM defined on it (running or not: its capacity is promised),
summed from ``vms``. Networks reach every host today (they have no host); a dir pool only
its host, shared and rbd pools every host. A host whose agent reported no list of CPU models
is not refused for a named model (unknown is not "no"); host-model and host-passthrough go
anywhere (under TCG the designer leaves them out: QEMU's default model is emulated).

Reservation: :func:`choose` runs inside the unit of work that inserts the VM row, after
``claims.serialize(s, Vm)`` (the placement lock): the allocation it reads includes every VM
committed before, and no other create places until this one commits, so two creates at
the same moment never book the same free room twice.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from corral.api import Hardware, VmCreate
from corral.api.scheduling import HostVerdict, PlacementReason
from corral.api.scheduling import Placement as PlacementOut
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Network, Nic, Operation, StoragePool, Vm, VmGroup
from corral.engine.oprows import ACTIVE
from corral.engine.scheduler import (
    Group,
    GroupPolicy,
    GuestOnHost,
    HostState,
    HostView,
    Placement,
    Policy,
    Request,
    Strategy,
    insufficient,
    place,
    render,
    summary,
)
from corral.engine.scheduler.model import HOST_CPU_MODES
from corral.engine.services import host_facts, pools, vm_design
from corral.engine.services.vm_lookup import find_vm
from corral.errors import InvalidInput, NotFound


def policy(ctx: EngineContext) -> Policy:
    """The engine's settings (`corral up --placement --cpu-overcommit --memory-overcommit`)."""
    s = ctx.settings
    try:
        strategy = Strategy(s.placement)
    except ValueError:
        raise InvalidInput(f"placement is spread or pack, not {s.placement!r}",
                           field="placement") from None
    return Policy(strategy, s.cpu_overcommit, s.memory_overcommit)


def find_group(s: Session, name: str) -> VmGroup:
    group = s.query(VmGroup).filter_by(name=name).one_or_none()
    if group is None:
        raise NotFound(f"VM group {name} not found (`corral vm group list`)", field="group")
    return group


def _group(g: VmGroup | None) -> Group | None:
    return None if g is None else Group(g.name, GroupPolicy(g.policy), g.strict)


def _cpu_model(hw: Hardware) -> str | None:
    """The named model a host must support; None for the host-* modes (see above)."""
    return None if hw.cpu_model in HOST_CPU_MODES else hw.cpu_model


def _state(status: str) -> HostState:
    try:
        return HostState(status)
    except ValueError:  # a state the scheduler does not know (fenced...): takes no VM
        return HostState.DOWN


def host_views(s: Session, req: Request, skip_vm: str | None = None) -> list[HostView]:
    """Every host as the scheduler sees it; ``skip_vm``'s own allocation left out (to judge
    where a VM that exists could go)."""
    guests: dict[str, list[GuestOnHost]] = defaultdict(list)
    used = {h: [a.cpus, a.memory_mib] for h, a in host_facts.allocations(s).items()}
    rows = (s.query(Vm.id, Vm.name, Vm.host_id, Vm.cpus, Vm.memory_mib, VmGroup.name)
            .outerjoin(VmGroup, Vm.group_id == VmGroup.id).filter(Vm.host_id.is_not(None)))
    for vm_id, name, host_id, cpus, memory, group in rows:
        if host_id is None:
            continue
        if vm_id == skip_vm:  # judged as if it were not there yet
            used[host_id][0] -= cpus
            used[host_id][1] -= memory
            continue
        guests[host_id].append(GuestOnHost(name, frozenset({group} if group else ())))
    for moving_id, moving, vcpus, mib, its_group, target in _incoming(s):
        if moving_id != skip_vm:  # on its way there: it takes its place there already
            used.setdefault(target, [0, 0])
            used[target][0] += vcpus
            used[target][1] += mib
            guests[target].append(GuestOnHost(moving, frozenset({its_group} if its_group
                                                                else ())))
    everywhere: set[str] = set()
    local: dict[str, set[str]] = defaultdict(set)
    for name, host_id in s.query(StoragePool.name, StoragePool.host_id).filter_by(
            status="ready"):
        (local[host_id] if host_id else everywhere).add(name)
    networks = frozenset(n for (n,) in s.query(Network.name).filter_by(status="ready"))
    views = []
    for h in s.query(Host):
        facts: dict[str, Any] = h.facts or {}
        models = facts.get("cpu_models")
        known = frozenset(models) if isinstance(models, list) else \
            frozenset({req.cpu_model} if req.cpu_model else ())  # unknown: not refused
        views.append(HostView(
            name=h.name, state=_state(h.status), cpus=int(facts.get("cpus") or 0),
            memory_mib=int(facts.get("memory_mib") or 0),
            used_vcpus=used.get(h.id, [0, 0])[0], used_memory_mib=used.get(h.id, [0, 0])[1],
            tags=frozenset(h.tags or ()),
            pools=frozenset(everywhere | local[h.id]), networks=networks, cpu_models=known,
            vms=tuple(guests[h.id])))
    return views


def _incoming(s: Session) -> list[tuple[str, str, int, int, str | None, str]]:
    """The VMs a pending or running migration (or HA recovery) moves to another host (id, name, vCPUs,
    memory, group, target host id): counted on their target as well as on their host
    until the move is recorded."""
    moving = {str(p["vm_id"]): str(p["target_id"])
              for (p,) in s.query(Operation.params).filter(
                  Operation.type.like("vm.migrate%") | (Operation.type == "vm.recover"),
                  Operation.status.in_(ACTIVE))
              if isinstance(p, dict) and p.get("vm_id") and p.get("target_id")}
    if not moving:
        return []
    rows = (s.query(Vm.id, Vm.name, Vm.cpus, Vm.memory_mib, VmGroup.name, Vm.host_id)
            .outerjoin(VmGroup, Vm.group_id == VmGroup.id).filter(Vm.id.in_(moving)))
    return [(vm_id, name, cpus, memory, group, moving[vm_id])
            for vm_id, name, cpus, memory, group, host_id in rows
            if host_id != moving[vm_id]]


def request_of(s: Session, req: VmCreate) -> tuple[Request, VmGroup | None]:
    """What a new VM asks of its host (and its group's row); 404 for a pinned host, group,
    network or pool that does not exist."""
    if req.host is not None and s.query(Host).filter_by(name=req.host).count() == 0:
        raise NotFound(f"host {req.host} not found (`corral host list`)", field="host")
    if s.query(Network).filter_by(name=req.network).count() == 0:
        raise NotFound(f"network {req.network} not found", field="network")
    pool = None if req.pool in (None, pools.DEFAULT_POOL) else req.pool
    if pool is not None:
        pools.find(s, pool)
    group = find_group(s, req.group) if req.group else None
    return Request(vcpus=req.cpus, memory_mib=req.memory_mib, tags=frozenset(req.host_tags),
                   pool=pool, networks=frozenset({req.network}),
                   cpu_model=_cpu_model(req.hardware), group=_group(group), host=req.host,
                   name=req.name), group


def choose(ctx: EngineContext, s: Session, req: VmCreate) -> tuple[Host, VmGroup | None]:
    """The host a new VM goes to, or the 409 that explains why none can take it. Call it
    after ``claims.serialize(s, Vm)`` and insert the VM in the same unit of work."""
    request, group = request_of(s, req)
    p = place(host_views(s, request), request, policy(ctx))
    if p.chosen is None:
        raise insufficient(p)
    return s.query(Host).filter_by(name=p.chosen).one(), group


def explain(ctx: EngineContext, req: VmCreate) -> PlacementOut:
    """The dry run of a create: where it would go and how every host was judged."""
    with ctx.db.session() as s:
        request, _group_row = request_of(s, req)
        return to_api(place(host_views(s, request), request, policy(ctx)), req.name)


def vm_request(s: Session, vm: Vm, host: str | None = None) -> Request:
    """What an existing VM asks of a host (its rows: group, root pool, networks, CPU model,
    tags); ``host`` pins it (a migration's target)."""
    group = s.get(VmGroup, vm.group_id) if vm.group_id else None
    root = vm_design.root_pool(s, vm)
    nets = frozenset(n for (n,) in s.query(Network.name).join(
        Nic, Nic.network_id == Network.id).filter(Nic.vm_id == vm.id))
    return Request(vcpus=vm.cpus, memory_mib=vm.memory_mib, tags=frozenset(vm.host_tags or ()),
                   pool=root.name if root is not None else None, networks=nets,
                   cpu_model=_cpu_model(vm_design.hardware_of(vm)), group=_group(group),
                   host=host, name=vm.name)


def of_vm(ctx: EngineContext, name: str) -> PlacementOut:
    """Where a VM runs and how every host would be judged for it now (its own allocation
    left out: its host is judged as if it were not there yet)."""
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        request = vm_request(s, vm)
        host = s.get(Host, vm.host_id) if vm.host_id else None
        p = place(host_views(s, request, skip_vm=vm.id), request, policy(ctx))
        return to_api(p, vm.name, current=host.name if host else None)


def to_api(p: Placement, vm: str, current: str | None = None) -> PlacementOut:
    verdicts = []
    for v in p.verdicts:
        w = v.weight
        verdicts.append(HostVerdict(
            host=v.host.name, state=v.host.state.value, eligible=v.eligible, rank=v.rank,
            reasons=[PlacementReason(filter=r.filter, detail=r.detail) for r in v.reasons],
            free_vcpus_after=w.free_vcpus_after if w else None,
            free_memory_mib_after=w.free_memory_mib_after if w else None,
            group_weight=w.group if w else None))
    text = render(p)
    if current is not None:  # an existing VM: where it is, and where it would go now
        text = [f"best now: {line.removeprefix('chosen: ')}" if line.startswith("chosen: ")
                else line for line in text]
        text.insert(2, f"runs on: {current} (each host judged without the VM's own vCPUs "
                       "and memory)")
    return PlacementOut(vm=vm, request=p.request.describe(), policy=p.policy.describe(),
                        chosen=p.chosen, current=current,
                        summary=None if p.chosen else summary(p), hosts=verdicts, text=text)
