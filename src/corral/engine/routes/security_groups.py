"""/api/v1/security-groups: groups of per-NIC firewall rules, applied live."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from corral.api.security_groups import SecurityGroup, SecurityGroupCreate, SgRule, SgRuleCreate
from corral.engine.context import EngineContext
from corral.engine.db.models import SecurityGroup as SgRow
from corral.engine.routes.deps import Project, authenticated, context, listed, need, owned, visible
from corral.engine.services import security_groups as sgs

SgName = Annotated[str, Depends(owned(SgRow, "security group"))]
router = APIRouter(prefix="/api/v1/security-groups", tags=["security-groups"],
                   dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("sg.read"), response_model=list[SecurityGroup])
def list_groups(projects: list[str] = Depends(listed("sg.read")),
                ctx: EngineContext = Depends(context)) -> list[SecurityGroup]:
    return visible(sgs.list_groups(ctx), projects)


@router.post("", dependencies=need("sg.create"), status_code=201, response_model=SecurityGroup)
def create_group(req: SecurityGroupCreate, project: Project,
                 ctx: EngineContext = Depends(context)) -> SecurityGroup:
    """A new group: one rule, egress to anywhere (ingress is denied until a rule allows it)."""
    return sgs.create(ctx, req, project)


@router.get("/{name}", dependencies=need("sg.read"), response_model=SecurityGroup)
def get_group(name: SgName, ctx: EngineContext = Depends(context)) -> SecurityGroup:
    return sgs.get(ctx, name)


@router.delete("/{name}", dependencies=need("sg.delete"), status_code=204)
def delete_group(name: SgName, ctx: EngineContext = Depends(context)) -> Response:
    """Refused (409) while NICs are in the group or other groups' rules name it."""
    sgs.delete(ctx, name)
    return Response(status_code=204)


@router.post("/{name}/rules", dependencies=need("sg.update"), status_code=201, response_model=SgRule)
def add_rule(name: SgName, req: SgRuleCreate, ctx: EngineContext = Depends(context)) -> SgRule:
    """Add an allow rule; applied to the group's NICs before the answer (live)."""
    return sgs.add_rule(ctx, name, req)


@router.delete("/{name}/rules/{rule_id}", dependencies=need("sg.update"), status_code=204)
def remove_rule(name: SgName, rule_id: str, ctx: EngineContext = Depends(context)) -> Response:
    sgs.remove_rule(ctx, name, rule_id)
    return Response(status_code=204)
