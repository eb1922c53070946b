"""/api/v1/storage/pools: storage pools (dir, shared, rbd)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api import Operation, Pool, PoolCreate
from corral.engine.context import EngineContext
from corral.engine.routes.deps import authenticated, context, need
from corral.engine.services import pools

router = APIRouter(prefix="/api/v1/storage/pools", tags=["storage"],
                   dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("pool.read"), response_model=list[Pool])
def list_pools(ctx: EngineContext = Depends(context)) -> list[Pool]:
    """Pools with capacity, allocation and free bytes as their hosts report them."""
    return pools.list_pools(ctx)


@router.post("", dependencies=need("pool.create"), status_code=202, response_model=Operation)
def create_pool(req: PoolCreate, ctx: EngineContext = Depends(context)) -> Operation:
    return pools.create(ctx, req)


@router.get("/{name}", dependencies=need("pool.read"), response_model=Pool)
def get_pool(name: str, ctx: EngineContext = Depends(context)) -> Pool:
    return pools.get(ctx, name)


@router.delete("/{name}", dependencies=need("pool.delete"), status_code=202, response_model=Operation)
def delete_pool(name: str, ctx: EngineContext = Depends(context)) -> Operation:
    """Refused (409) while the pool holds volumes, and for the default pool."""
    return pools.delete(ctx, name)
