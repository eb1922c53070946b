"""A page of the VM list: filtered, sorted, counted and cut by the database (the web UI's
VM list; rendering 1,000 rows took most of its 146 ms p99: bench/web_ui.py).

Who may see what is the caller's: ``projects`` are those where it may read VMs
(access.projects_with), and no row of another project is read. Sorting is total (the
full name ends every key), so pages neither repeat nor skip a VM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from corral.api import Vm as VmOut
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Vm
from corral.engine.services.vms import rows_out

PAGE_SIZE = 100

# A VM's bare name (its full name is PROJECT.NAME outside the default project).
_BARE = sa.case((Vm.project == DEFAULT_PROJECT, Vm.name),
                else_=sa.func.substr(Vm.name, sa.func.length(Vm.project) + 2))
_HOST = sa.func.coalesce(Host.name, "")
# The sortable columns (``sort=state``; ``-state``: reversed, every part of the key).
SORTS: dict[str, tuple[Any, ...]] = {
    "name": (_BARE, Vm.project),
    "state": (Vm.state, Vm.project, _BARE),
    "project": (Vm.project, _BARE),
    "host": (_HOST, Vm.project, _BARE),
    "size": (Vm.cpus, Vm.memory_mib, Vm.project, _BARE),
}
DEFAULT_SORT = "project"


@dataclass(frozen=True)
class VmQuery:
    """What the list asks: filters (empty: any), a sort key of SORTS ("-" first: reversed),
    the page (1 is the first; past the last: the last)."""

    name: str = ""  # a part of the bare name, any case
    state: str = ""
    host: str = ""
    project: str = ""
    sort: str = DEFAULT_SORT
    page: int = 1
    size: int = PAGE_SIZE


@dataclass(frozen=True)
class VmPage:
    vms: list[VmOut]
    matched: int  # VMs the filters keep
    total: int  # VMs the caller may see
    page: int  # the page answered (1-based)
    pages: int  # at least 1
    first: int  # the position of its first VM (1-based; 0: none)
    hosts: list[str]  # the hosts of the caller's VMs (the host filter's choices)


def page(ctx: EngineContext, projects: list[str], query: VmQuery) -> VmPage:
    seen = Vm.project.in_(projects)
    kept: list[sa.ColumnElement[bool]] = [seen]
    if query.name:
        kept.append(sa.func.lower(_BARE).contains(query.name.lower(), autoescape=True))
    if query.state:
        kept.append(Vm.state == query.state)
    if query.project:
        kept.append(Vm.project == query.project)
    if query.host:
        kept.append(Host.name == query.host)
    key = SORTS.get(query.sort.removeprefix("-"), SORTS[DEFAULT_SORT])
    order = [k.desc() for k in key] if query.sort.startswith("-") else list(key)
    joined = sa.outerjoin(Vm, Host, Host.id == Vm.host_id)
    with ctx.db.session() as s:
        total = s.execute(sa.select(sa.func.count()).select_from(Vm).where(seen)).scalar_one()
        matched = s.execute(sa.select(sa.func.count()).select_from(joined)
                            .where(*kept)).scalar_one()
        pages = max(1, -(-matched // query.size))
        number = min(max(1, query.page), pages)
        table: Any = Vm.__table__
        rows: list[Any] = list(s.execute(
            sa.select(table).select_from(joined).where(*kept).order_by(*order)
            .offset((number - 1) * query.size).limit(query.size)).all())
        hosts = sorted(s.execute(sa.select(Host.name).distinct()
                                 .join(Vm, Vm.host_id == Host.id).where(seen)).scalars())
        out = rows_out(s, rows, Vm.id.in_([r.id for r in rows])) if rows else []
    return VmPage(vms=out, matched=matched, total=total, page=number, pages=pages,
                  first=(number - 1) * query.size + 1 if out else 0, hosts=hosts)
