"""Affinity groups (`corral vm group`): VMs the scheduler keeps on one host (affinity) or on
different hosts (anti-affinity); a VM joins one when it is created (`vm create --group`)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.orm import Session

from corral.api.scheduling import VmGroup as VmGroupOut
from corral.api.scheduling import VmGroupCreate, VmGroupPolicy
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host, Vm, VmGroup
from corral.engine.services.vm_scheduling import find_group
from corral.errors import Conflict


def _out(s: Session, g: VmGroup) -> VmGroupOut:
    members = s.query(Vm.name, Host.name).outerjoin(Host, Vm.host_id == Host.id) \
        .filter(Vm.group_id == g.id).order_by(Vm.name).all()
    where: dict[str, list[str]] = defaultdict(list)
    for vm, host in members:
        where[host or "-"].append(vm)
    return VmGroupOut(name=g.name, project=g.project, policy=VmGroupPolicy(g.policy), strict=g.strict,
                      members=[vm for vm, _ in members], hosts=dict(sorted(where.items())),
                      created_at=g.created_at)


def create(ctx: EngineContext, req: VmGroupCreate, project: str = DEFAULT_PROJECT) -> VmGroupOut:
    with ctx.db.session() as s:
        if s.query(VmGroup).filter_by(name=req.name).count():
            raise Conflict(f"VM group {req.name} already exists", field="name")
        g = VmGroup(name=req.name, policy=req.policy.value, strict=req.strict, project=project)
        s.add(g)
        with claims.unique(f"VM group {req.name} was just made by a concurrent request",
                           field="name"):
            s.flush()
        return _out(s, g)


def list_groups(ctx: EngineContext) -> list[VmGroupOut]:
    with ctx.db.session() as s:
        return [_out(s, g) for g in s.query(VmGroup).order_by(VmGroup.name)]


def get(ctx: EngineContext, name: str) -> VmGroupOut:
    with ctx.db.session() as s:
        return _out(s, find_group(s, name))


def delete(ctx: EngineContext, name: str) -> None:
    """Refused (409) while VMs are in it: their placement rule would vanish under them."""
    with ctx.db.session() as s:
        claims.serialize(s, Vm)  # a create joining it at the same moment sees it gone, or we it
        g = find_group(s, name)
        members = [n for (n,) in s.query(Vm.name).filter_by(group_id=g.id).order_by(Vm.name)]
        if members:
            raise Conflict(f"VM group {name} has members: {', '.join(members)} (delete them "
                           "first)", field="name", members=members)
        s.delete(g)
