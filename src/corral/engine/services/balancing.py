"""Load balancing: the policy (cluster settings ``balance.*``), what the balancer decides
from (hosts' and VMs' loads, recent moves, what is busy), and how its move is made (a live
migration, ``vm_migration.migrate``, with the reason on its operation).

The decision itself is pure (corral.engine.balancer); the loop that runs it each interval
is corral.engine.balance_loop. What is busy is left alone: while a migration the balancer
started runs, nothing else is decided; a VM with any operation pending or running does not
move, nor does a VM whose evacuation mode is ``stop`` (it must not move live), nor does a
host in maintenance or named by a host operation (an evacuation) give or take one. A VM's
cool-down counts from the end of its last migration, whoever asked for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from corral.api import Operation as OperationOut
from corral.api import VmState
from corral.api.cluster_policy import ClusterPolicySet
from corral.api.cluster_settings import Value
from corral.api.migration import VmMigrate
from corral.engine.balancer import HostLoad, Move, Thresholds, VmLoad
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Operation, Vm
from corral.engine.load_history import LoadHistory
from corral.engine.oprows import ACTIVE
from corral.engine.services import cluster_settings, vm_migration
from corral.errors import CorralError, InvalidInput

MIGRATE = vm_migration.TYPE
# API field -> cluster setting
FIELDS = {"cpu_percent": "balance.cpu_percent", "memory_percent": "balance.memory_percent",
          "interval_s": "balance.interval_s", "window_s": "balance.window_s",
          "cooldown_s": "balance.cooldown_s", "margin_percent": "balance.margin_percent"}


@dataclass(frozen=True)
class Policy:
    mode: str
    cpu_percent: int
    memory_percent: int
    interval_s: int
    window_s: int
    cooldown_s: int
    margin_percent: int

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(float(self.cpu_percent), float(self.memory_percent),
                          float(self.margin_percent), float(self.window_s),
                          float(self.cooldown_s))


def _int(value: Value) -> int:
    return int(value) if isinstance(value, int | float) else 0


def policy(ctx: EngineContext) -> Policy:
    return Policy(str(cluster_settings.get(ctx, "balance.mode")),
                  *(_int(cluster_settings.get(ctx, key)) for key in FIELDS.values()))


def set_policy(ctx: EngineContext, req: ClusterPolicySet) -> Policy:
    """Every given value checked (a 422 names the field), then all set at once."""
    given = {f: getattr(req, f) for f in FIELDS if getattr(req, f) is not None}
    for f, raw in given.items():
        try:
            cluster_settings.parse(FIELDS[f], raw)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field=f) from None
    with ctx.db.session() as s:
        cluster_settings.put(s, "balance.mode", req.mode)
        for f, raw in given.items():
            cluster_settings.put(s, FIELDS[f], raw)
    return policy(ctx)


# -- what the balancer decides from ------------------------------------------------------------

def _at(dt: datetime) -> float:
    return dt.timestamp()


@dataclass(frozen=True)
class Inputs:
    hosts: list[HostLoad]
    vms: list[VmLoad]
    busy: str | None  # why the balancer waits this round (its own migration runs)


def _active(s: Session) -> list[Operation]:
    return list(s.query(Operation).filter(Operation.status.in_(ACTIVE)))


def balancing_in_flight(ops: list[Operation]) -> Operation | None:
    """A migration the balancer started (its params carry the reason) that has not ended."""
    for op in ops:
        if op.type == MIGRATE and (op.params or {}).get("reason"):
            return op
    return None


def _moves(s: Session, since: float) -> list[tuple[float, str, list[str], list[str]]]:
    """(end, source host, target hosts, VMs) of the migrations that succeeded since."""
    rows = s.query(Operation).filter(Operation.type == MIGRATE,
                                     Operation.status == "success",
                                     Operation.updated_at >= datetime.fromtimestamp(since, UTC))
    found = []
    for op in rows:
        res: dict[str, Any] = op.resources or {}
        found.append((_at(op.updated_at), op.location or "", list(res.get("hosts", [])),
                      list(res.get("vms", []))))
    return found


def inputs(ctx: EngineContext, loads: LoadHistory, p: Policy, now: float) -> Inputs:
    with ctx.db.session() as s:
        active = _active(s)
        mine = balancing_in_flight(active)
        busy_vms = {v for op in active for v in (op.resources or {}).get("vms", [])}
        busy_hosts = {h for op in active if op.type.startswith("host.")
                      for h in (op.resources or {}).get("hosts", [])}
        settled: dict[str, float] = {}
        moved: dict[str, float] = {}
        for end, source, targets, names in _moves(s, now - max(p.window_s, p.cooldown_s)):
            for host in (source, *targets):
                settled[host] = max(settled.get(host, end), end)
            for name in names:
                moved[name] = max(moved.get(name, end), end)
        hosts: list[HostLoad] = []
        ids: dict[str, str] = {}
        for h in s.query(Host).order_by(Host.name):
            ids[h.id] = h.name
            facts: dict[str, Any] = h.facts or {}
            w = loads.window(h.id, p.window_s, now, settled.get(h.name))
            hosts.append(HostLoad(
                name=h.name, eligible=h.status == "up" and h.name not in busy_hosts,
                cpus=int(facts.get("cpus") or 0), memory_mib=int(facts.get("memory_mib") or 0),
                cpu_percent=w.cpu_percent, memory_percent=w.memory_percent,
                recent_cpu_percent=w.recent_cpu_percent,
                recent_memory_percent=w.recent_memory_percent, covered=w.covered))
        per_vm = {h.id: loads.window(h.id, p.window_s, now).vm_cpus for h in s.query(Host)}
        vms = [VmLoad(name=v.name, host=ids[v.host_id],
                      cpus_used=per_vm.get(v.host_id, {}).get(v.id, 0.0),
                      memory_mib=v.memory_mib,
                      movable=(v.state == VmState.RUNNING.value and v.name not in busy_vms
                               and v.evacuation != "stop"),
                      last_moved=moved.get(v.name))
               for v in s.query(Vm).filter(Vm.host_id.is_not(None)).order_by(Vm.name)
               if v.host_id is not None and v.host_id in ids]
    busy = None if mine is None else f"its migration {mine.id} runs"
    return Inputs(hosts, vms, busy)


def fits(ctx: EngineContext, vm: str, target: str) -> str | None:
    """Why the VM cannot move live to ``target`` now (every check of a migration: the
    scheduler's hard rules, shared storage...), or None."""
    try:
        vm_migration.check(ctx, vm, target)
    except CorralError as exc:
        return exc.message
    return None


def move(ctx: EngineContext, m: Move) -> OperationOut:
    return vm_migration.migrate(ctx, m.vm, VmMigrate(to=m.target), reason=m.reason)


def operation_status(ctx: EngineContext, op_ids: list[str]) -> dict[str, str]:
    with ctx.db.session() as s:
        return {op.id: op.status for op in
                s.query(Operation).filter(Operation.id.in_(op_ids))} if op_ids else {}
