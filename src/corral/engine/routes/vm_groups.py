"""/api/v1/vm-groups: affinity groups (the scheduler keeps their VMs together or apart)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from corral.api.scheduling import VmGroup, VmGroupCreate
from corral.engine.context import EngineContext
from corral.engine.db.models import VmGroup as VmGroupRow
from corral.engine.routes.deps import Project, authenticated, context, listed, need, owned, visible
from corral.engine.services import vm_groups

GroupName = Annotated[str, Depends(owned(VmGroupRow, "VM group"))]
router = APIRouter(prefix="/api/v1/vm-groups", tags=["vm-groups"],
                   dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("vm_group.read"), response_model=list[VmGroup])
def list_groups(projects: list[str] = Depends(listed("vm_group.read")),
                ctx: EngineContext = Depends(context)) -> list[VmGroup]:
    return visible(vm_groups.list_groups(ctx), projects)


@router.post("", dependencies=need("vm_group.create"), status_code=201, response_model=VmGroup)
def create_group(req: VmGroupCreate, project: Project,
                 ctx: EngineContext = Depends(context)) -> VmGroup:
    """A group VMs join at creation (``group`` of a VM create): ``anti-affinity`` puts each
    on a host of its own, ``affinity`` all on one; ``strict`` refuses a VM that cannot keep
    the rule, soft only prefers the hosts that keep it."""
    return vm_groups.create(ctx, req, project)


@router.get("/{name}", dependencies=need("vm_group.read"), response_model=VmGroup)
def get_group(name: GroupName, ctx: EngineContext = Depends(context)) -> VmGroup:
    return vm_groups.get(ctx, name)


@router.delete("/{name}", dependencies=need("vm_group.delete"), status_code=204)
def delete_group(name: GroupName, ctx: EngineContext = Depends(context)) -> Response:
    """Refused (409) while VMs are in it."""
    vm_groups.delete(ctx, name)
    return Response(status_code=204)
