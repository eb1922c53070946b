"""/api/v1/storage/pools/{pool}/volumes (and /api/v1/storage/volumes): volumes of pools."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api import Operation, Volume, VolumeCreate, VolumeResize
from corral.engine.context import EngineContext
from corral.engine.routes.deps import authenticated, context, need
from corral.engine.services import volumes

router = APIRouter(prefix="/api/v1/storage", tags=["storage"],
                   dependencies=[Depends(authenticated)])


@router.get("/volumes", dependencies=need("volume.read"), response_model=list[Volume])
def list_all_volumes(ctx: EngineContext = Depends(context)) -> list[Volume]:
    """The volumes of every pool."""
    return volumes.list_volumes(ctx)


@router.get("/pools/{pool}/volumes", dependencies=need("volume.read"), response_model=list[Volume])
def list_volumes(pool: str, ctx: EngineContext = Depends(context)) -> list[Volume]:
    return volumes.list_volumes(ctx, pool)


@router.post("/pools/{pool}/volumes", dependencies=need("volume.create"),
             status_code=202, response_model=Operation)
def create_volume(pool: str, req: VolumeCreate,
                  ctx: EngineContext = Depends(context)) -> Operation:
    """A thin volume; 409 when it would not fit in the pool's free space."""
    return volumes.create(ctx, pool, req)


@router.get("/pools/{pool}/volumes/{name}", dependencies=need("volume.read"), response_model=Volume)
def get_volume(pool: str, name: str, ctx: EngineContext = Depends(context)) -> Volume:
    return volumes.get(ctx, pool, name)


@router.post("/pools/{pool}/volumes/{name}/resize", dependencies=need("volume.update"),
             status_code=202, response_model=Operation)
def resize_volume(pool: str, name: str, req: VolumeResize,
                  ctx: EngineContext = Depends(context)) -> Operation:
    """Grow a volume (never shrink); an attached volume of a running VM grows live."""
    return volumes.resize(ctx, pool, name, req)


@router.delete("/pools/{pool}/volumes/{name}", dependencies=need("volume.delete"),
               status_code=202, response_model=Operation)
def delete_volume(pool: str, name: str, ctx: EngineContext = Depends(context)) -> Operation:
    """Refused (409) while the volume is attached to a VM."""
    return volumes.delete(ctx, pool, name)
