"""/api/v1/operations: status of long work, a blocking wait, and cancel."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query

from corral.api import Operation, OperationStatus
from corral.engine.context import EngineContext
from corral.engine.routes.deps import authenticated, context, need

router = APIRouter(prefix="/api/v1/operations", tags=["operations"],
                   dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("operation.read"), response_model=list[Operation])
def list_operations(
    limit: int = Query(50, ge=1, le=1000),
    status: list[OperationStatus] = Query([], description="Only these (repeatable)"),
    type_: str | None = Query(None, alias="type", max_length=40,
                              description="Only this type, e.g. vm.create"),
    after: str | None = Query(None, max_length=36,
                              description="The next page: those after this id (newest first)"),
    ctx: EngineContext = Depends(context),
) -> list[Operation]:
    """Newest first, in a stable order (created, then id): page on with ``after`` set to
    the last id of a page."""
    return ctx.ops.listing(status=status, type_=type_, limit=limit, after=after)


@router.get("/{op_id}", dependencies=need("operation.read"), response_model=Operation)
def get_operation(op_id: str, ctx: EngineContext = Depends(context)) -> Operation:
    return ctx.ops.get(op_id)


@router.delete("/{op_id}", dependencies=need("operation.cancel"), response_model=Operation)
def cancel_operation(op_id: str, ctx: EngineContext = Depends(context)) -> Operation:
    """Cancel: a pending operation is dropped (``cancelled``); a running one whose type
    allows it (``may_cancel``) is asked to stop and ends ``cancelled`` at its next safe
    point. 409 when it is done already or cannot be cancelled."""
    return ctx.ops.cancel(op_id)


@router.get("/{op_id}/wait", dependencies=need("operation.read"), response_model=Operation)
async def wait_operation(op_id: str, timeout: float = Query(300, ge=0, le=3600),
                         ctx: EngineContext = Depends(context)) -> Operation:
    """Blocks until the operation is done or ``timeout`` seconds pass; returns it either way."""
    return await asyncio.to_thread(ctx.ops.wait, op_id, timeout)
