"""/api/v1/operations: status of long work, a blocking wait, and cancel."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query

from corral.api import Operation, OperationStatus
from corral.engine.context import EngineContext
from corral.engine.permissions import ALL_PROJECTS
from corral.engine.routes.deps import Project, authenticated, caller, context, listed, need
from corral.engine.services.auth import Principal
from corral.errors import NotFound

router = APIRouter(prefix="/api/v1/operations", tags=["operations"],
                   dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("operation.read"), response_model=list[Operation])
def list_operations(
    project: Project,
    projects: list[str] = Depends(listed("operation.read")),
    limit: int = Query(50, ge=1, le=1000),
    status: list[OperationStatus] = Query([], description="Only these (repeatable)"),
    type_: str | None = Query(None, alias="type", max_length=40,
                              description="Only this type, e.g. vm.create"),
    after: str | None = Query(None, max_length=36,
                              description="The next page: those after this id (newest first)"),
    who: Principal = Depends(caller),
    ctx: EngineContext = Depends(context),
) -> list[Operation]:
    """Newest first, in a stable order (created, then id): page on with ``after`` set to
    the last id of a page. Those of the project (``*``: of every project the caller
    reads), and those on the engine's own resources for engine-wide readers."""
    engine_wide = "operation.read" in who.access.everywhere()
    every = engine_wide and project == ALL_PROJECTS  # no filter: all, hosts' included
    return ctx.ops.listing(status=status, type_=type_, limit=limit, after=after,
                           projects=None if every else projects, engine_wide=engine_wide)


def _seen(ctx: EngineContext, op_id: str, who: Principal, project: str,
          permission: str) -> Operation:
    """The operation, if it is of the request's project (or of none, for engine-wide
    callers); else 404 as for one that does not exist."""
    op = ctx.ops.get(op_id)
    if op.project is None:
        ok = permission in who.access.everywhere()
    else:
        ok = op.project == project or (project == ALL_PROJECTS
                                       and who.access.may(permission, op.project))
    if not ok:
        raise NotFound(f"operation {op_id} not found")
    return op


@router.get("/{op_id}", dependencies=need("operation.read"), response_model=Operation)
def get_operation(op_id: str, project: Project, who: Principal = Depends(caller),
                  ctx: EngineContext = Depends(context)) -> Operation:
    return _seen(ctx, op_id, who, project, "operation.read")


@router.delete("/{op_id}", dependencies=need("operation.cancel"), response_model=Operation)
def cancel_operation(op_id: str, project: Project, who: Principal = Depends(caller),
                     ctx: EngineContext = Depends(context)) -> Operation:
    """Cancel: a pending operation is dropped (``cancelled``); a running one whose type
    allows it (``may_cancel``) is asked to stop and ends ``cancelled`` at its next safe
    point. 409 when it is done already or cannot be cancelled."""
    _seen(ctx, op_id, who, project, "operation.cancel")
    return ctx.ops.cancel(op_id)


@router.get("/{op_id}/wait", dependencies=need("operation.read"), response_model=Operation)
async def wait_operation(op_id: str, project: Project, who: Principal = Depends(caller),
                         timeout: float = Query(300, ge=0, le=3600),
                         ctx: EngineContext = Depends(context)) -> Operation:
    """Blocks until the operation is done or ``timeout`` seconds pass; returns it either way."""
    await asyncio.to_thread(_seen, ctx, op_id, who, project, "operation.read")
    return await asyncio.to_thread(ctx.ops.wait, op_id, timeout)
