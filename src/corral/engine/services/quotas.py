"""Project quotas: counted from the rows, checked when work is submitted.

A check and the row that uses the quota are written in one unit of work that first holds
the project's row (claims.hold): of N concurrent creates in one project, each sees the
ones before it, so together they never pass a limit (SQLite: one writer at a time;
PostgreSQL: the project row's lock). A missing limit is no limit.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from corral.engine.db import claims
from corral.engine.db.models import Network, Project, SecurityGroup, Vm, Volume
from corral.errors import NotFound, QuotaExceeded

MIB = 1 << 20
# Quota name -> what it counts; sizes are bytes.
QUOTAS: dict[str, str] = {
    "vms": "VMs",
    "vcpus": "vCPUs of its VMs",
    "memory": "memory of its VMs (bytes)",
    "disk": "root disks and volumes (bytes)",
    "volumes": "volumes",
    "snapshots": "snapshots of its VMs",
    "networks": "networks",
    "security_groups": "security groups",
}
_BYTES = {"memory", "disk"}


def usage(s: Session, project: str) -> dict[str, int]:
    """What the project uses now, per quota."""
    vms = s.execute(sa.select(sa.func.count(Vm.id), sa.func.coalesce(sa.func.sum(Vm.cpus), 0),
                              sa.func.coalesce(sa.func.sum(Vm.memory_mib), 0),
                              sa.func.coalesce(sa.func.sum(Vm.disk_bytes), 0),
                              sa.func.coalesce(sa.func.sum(Vm.snapshots), 0))
                    .where(Vm.project == project)).one()
    vols = s.execute(sa.select(sa.func.count(Volume.id),
                               sa.func.coalesce(sa.func.sum(Volume.size), 0))
                     .where(Volume.project == project)).one()
    return {
        "vms": int(vms[0]), "vcpus": int(vms[1]), "memory": int(vms[2]) * MIB,
        "disk": int(vms[3]) + int(vols[1]), "volumes": int(vols[0]),
        "snapshots": int(vms[4]),
        "networks": s.query(Network).filter_by(project=project).count(),
        "security_groups": s.query(SecurityGroup).filter_by(project=project).count(),
    }


def _shown(quota: str, value: int) -> str:
    if quota in _BYTES:
        return f"{value / (1 << 30):.1f} GiB" if value >= 1 << 30 else f"{value >> 20} MiB"
    return str(value)


def check(s: Session, project: str, asked: dict[str, int]) -> None:
    """Refuse (409 ``quota_exceeded``) what would take the project past a limit; holds the
    project's row until the caller's unit of work ends (call it before adding the rows)."""
    row = s.query(Project).filter_by(name=project).one_or_none()
    if row is None:
        raise NotFound(f"project {project} not found", field="project")
    claims.hold(s, row)
    limits: dict[str, Any] = row.quotas or {}
    if not any(limits.get(q) is not None for q in asked):
        return
    use = usage(s, project)
    for quota, more in asked.items():
        limit = limits.get(quota)
        if limit is not None and more > 0 and use[quota] + more > int(limit):
            raise QuotaExceeded(
                f"project {project}: quota {quota} is {_shown(quota, int(limit))}, "
                f"{_shown(quota, use[quota])} used; this needs {_shown(quota, more)} more "
                "(`corral project show` for its use)",
                field="project", quota=quota, limit=int(limit), use=use[quota], asked=more)


def check_vm(s: Session, project: str, cpus: int, memory_mib: int, disk_bytes: int) -> None:
    check(s, project, {"vms": 1, "vcpus": cpus, "memory": memory_mib * MIB,
                       "disk": disk_bytes})
