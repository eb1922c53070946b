"""What each page of the web UI shows, read through the same services as the API and
filtered by the same access (engine/access.py): a user sees the VMs, operations and events
of the projects where it holds the read permission, hosts and pools when it may read them
engine-wide, and nothing of other projects (their VMs answer 404, as in the API)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

import sqlalchemy as sa

from corral.api import Event, Host, Operation, Pool, Vm
from corral.api.nics import VmNic
from corral.api.snapshots import Snapshot
from corral.api.storage import VmDisk
from corral.engine.access import project_names
from corral.engine.context import EngineContext
from corral.engine.db.models import Host as HostRow
from corral.engine.db.models import Vm as VmRow
from corral.engine.permissions import ALL_PROJECTS
from corral.engine.projects import full_name, project_of
from corral.engine.routes.events import visible
from corral.engine.services import hosts, pools, vm_disks, vm_nics, vm_pages, vm_snapshots, vms
from corral.engine.services.auth import Principal
from corral.errors import CorralError, NotFound

STATES = ("running", "stopped", "paused", "shutting-down", "creating", "crashed", "error",
          "unknown", "deleting")


def may(who: Principal, permission: str, project: str = ALL_PROJECTS) -> bool:
    return who.access.may(permission, project)


def projects_with(ctx: EngineContext, who: Principal, permission: str) -> list[str]:
    with ctx.db.session() as s:
        return who.access.projects_with(permission, project_names(s))


def vm_full_name(vm: Vm) -> str:
    return full_name(vm.project, vm.name)


@dataclass
class Dashboard:
    hosts: list[Host]
    vm_counts: dict[str, int]
    vm_total: int
    pools: list[Pool]
    operations: list[Operation]
    events: list[Event]
    sees_hosts: bool
    sees_pools: bool
    cpu_load: dict[str, float]  # host name -> CPU % of its latest report (none: not heard)


def dashboard(ctx: EngineContext, who: Principal) -> Dashboard:
    sees_hosts, sees_pools = may(who, "host.read"), may(who, "pool.read")
    counts = _vm_counts(ctx, projects_with(ctx, who, "vm.read"))
    # what happened to VMs and hosts (operations have their own list beside it)
    events = [e for e in reversed(ctx.bus.recent)
              if e.type != "operation" and visible(who, e)][:8]
    return Dashboard(hosts=hosts.list_hosts(ctx) if sees_hosts else [],
                     vm_counts={s: counts[s] for s in STATES if counts[s]},
                     vm_total=sum(counts.values()),
                     pools=pools.list_pools(ctx) if sees_pools else [],
                     operations=recent_operations(ctx, who, 8), events=events,
                     sees_hosts=sees_hosts, sees_pools=sees_pools,
                     cpu_load=_cpu_load(ctx) if sees_hosts else {})


def _vm_counts(ctx: EngineContext, projects: list[str]) -> Counter[str]:
    """The projects' VMs by state, counted by the database: the dashboard needs no VM's
    row (1,000 VMs listed took about 100 ms of its time: bench/web_ui.py)."""
    with ctx.db.session() as s:
        q = s.query(VmRow.state, sa.func.count(VmRow.id)) \
            .filter(VmRow.project.in_(projects)).group_by(VmRow.state)
        return Counter({str(state): int(n) for state, n in q})


def _cpu_load(ctx: EngineContext) -> dict[str, float]:
    """Each host's CPU use as its agent last reported it (engine/load_history.py)."""
    with ctx.db.session() as s:
        ids = dict(s.query(HostRow.name, HostRow.id).all())
    found = {}
    for name, host_id in ids.items():
        sample = ctx.loads.latest(host_id)
        if sample is not None and sample.cpu_percent is not None:
            found[name] = sample.cpu_percent
    return found


PANEL_SIZE = 50  # the task panel's entries (static/tasks.js keeps as many)


def recent_events(ctx: EngineContext, who: Principal, limit: int) -> list[Event]:
    """What the task panel starts with: the engine's recent events the caller may see
    (its stream's filter), newest first, each operation once (its latest state), with the
    recent operations of the database the events no longer hold (an engine restarted)."""
    found: list[Event] = []
    ops: set[str] = set()
    for event in reversed(list(ctx.bus.recent)):  # a copy: publishers append meanwhile
        if not visible(who, event):
            continue
        if event.type == "operation":
            op_id = str(event.data.get("id"))
            if op_id in ops:
                continue
            ops.add(op_id)
        found.append(event)
    if "event.read" in who.access.anywhere():  # the operations its events would show
        for op in recent_operations(ctx, who, 20):
            event = Event(type="operation", time=op.updated_at,
                          data=op.model_dump(mode="json"), project=op.project)
            if op.id not in ops and visible(who, event):
                found.append(event)
    found.sort(key=lambda e: _aware(e.time), reverse=True)
    return found[:limit]


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def recent_operations(ctx: EngineContext, who: Principal, limit: int,
                      vm: str | None = None) -> list[Operation]:
    """The newest operations the caller may read (those of one VM, by its full name)."""
    engine_wide = "operation.read" in who.access.everywhere()
    projects = [project_of(vm)] if vm else projects_with(ctx, who, "operation.read")
    ops = ctx.ops.listing(limit=200 if vm else limit,
                          projects=None if engine_wide and not vm else projects,
                          engine_wide=engine_wide and not vm)
    if vm:
        ops = [op for op in ops if vm in op.resources.get("vms", [])]
    return ops[:limit]


@dataclass
class VmList:
    """A page of the VM list (services/vm_pages.py: filtered, sorted and cut by the
    database), and what its filters offer."""

    found: vm_pages.VmPage
    query: vm_pages.VmQuery
    projects: list[str]
    powers: set[str] = field(default_factory=set)  # projects where the caller may power VMs

    @property
    def vms(self) -> list[Vm]:
        return self.found.vms

    def link(self, **changed: str | int) -> str:
        """This list's address with ``changed`` (a page, a sort): the filters and sort
        stay, as does the page unless changed (a new sort: pass page=1)."""
        q = self.query
        params: dict[str, str | int] = {
            "name": q.name, "state": q.state, "host": q.host, "project": q.project,
            "sort": q.sort, "page": self.found.page}
        params.update(changed)
        if params["sort"] == vm_pages.DEFAULT_SORT:
            params["sort"] = ""
        kept = {k: v for k, v in params.items() if v and not (k == "page" and v == 1)}
        return "/vms?" + urlencode(kept) if kept else "/vms"


def vm_list(ctx: EngineContext, who: Principal, query: vm_pages.VmQuery) -> VmList:
    projects = projects_with(ctx, who, "vm.read")
    found = vm_pages.page(ctx, projects, query)
    return VmList(found=found, query=query, projects=projects,
                  powers={p for p in projects if may(who, "vm.power", p)})


def readable_vm(ctx: EngineContext, who: Principal, name: str) -> Vm:
    """The VM of that full name, if the caller may read it; else 404, as for none."""
    project = project_of(name)
    if not who.access.sees(project) or not may(who, "vm.read", project):
        raise NotFound(f"VM {name} not found")
    return vms.get(ctx, name)


@dataclass
class VmDetail:
    vm: Vm
    full_name: str
    disks: list[VmDisk]
    nics: list[VmNic]
    snapshots: list[Snapshot] | None
    snapshots_note: str
    operations: list[Operation]
    may_power: bool


def vm_detail(ctx: EngineContext, who: Principal, name: str) -> VmDetail:
    vm = readable_vm(ctx, who, name)
    project = vm.project
    snaps: list[Snapshot] | None = None
    note = ""
    if may(who, "snapshot.read", project):
        try:
            snaps = vm_snapshots.list_snapshots(ctx, name)
        except CorralError as exc:  # its host does not answer: the rest of the page still does
            note = (f"Snapshots unavailable: host {vm.host} does not answer."
                    if exc.status == 502 else f"Snapshots unavailable: {exc.message}")
    else:
        note = "Your role does not show snapshots."
    return VmDetail(vm=vm, full_name=name, disks=vm_disks.list_disks(ctx, name),
                    nics=vm_nics.list_nics(ctx, name), snapshots=snaps, snapshots_note=note,
                    operations=recent_operations(ctx, who, 10, vm=name),
                    may_power=may(who, "vm.power", project))


@dataclass
class VmTop:
    """The VM page's live part: the VM, its recent operations, whether the caller may
    start and stop it."""

    vm: Vm
    operations: list[Operation]
    may_power: bool


def vm_top(ctx: EngineContext, who: Principal, name: str) -> VmTop:
    vm = readable_vm(ctx, who, name)
    return VmTop(vm=vm, operations=recent_operations(ctx, who, 10, vm=name),
                 may_power=may(who, "vm.power", vm.project))


def readable_operation(ctx: EngineContext, who: Principal, op_id: str) -> Operation:
    """The operation, if the caller may read it (of one of its projects, or the engine's
    for engine-wide readers); else 404."""
    op = ctx.ops.get(op_id)
    if op.project is None:
        ok = "operation.read" in who.access.everywhere()
    else:
        ok = may(who, "operation.read", op.project)
    if not ok:
        raise NotFound(f"operation {op_id} not found")
    return op
