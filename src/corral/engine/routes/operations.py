"""/api/v1/operations: status of long work, and a blocking wait."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query

from corral.api import Operation
from corral.engine.context import EngineContext
from corral.engine.db.models import Operation as OperationRow
from corral.engine.operations import to_api
from corral.engine.routes.deps import authenticated, context

router = APIRouter(prefix="/api/v1/operations", tags=["operations"],
                   dependencies=[Depends(authenticated)])


@router.get("", response_model=list[Operation])
def list_operations(limit: int = Query(50, ge=1, le=1000),
                    ctx: EngineContext = Depends(context)) -> list[Operation]:
    with ctx.db.session() as s:
        rows = s.query(OperationRow).order_by(OperationRow.created_at.desc()).limit(limit)
        return [to_api(op) for op in rows]


@router.get("/{op_id}", response_model=Operation)
def get_operation(op_id: str, ctx: EngineContext = Depends(context)) -> Operation:
    return ctx.ops.get(op_id)


@router.get("/{op_id}/wait", response_model=Operation)
async def wait_operation(op_id: str, timeout: float = Query(300, ge=0, le=3600),
                         ctx: EngineContext = Depends(context)) -> Operation:
    """Blocks until the operation is done or ``timeout`` seconds pass; returns it either way."""
    return await asyncio.to_thread(ctx.ops.wait, op_id, timeout)
