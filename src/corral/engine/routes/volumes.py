"""/api/v1/storage/pools/{pool}/volumes (and /api/v1/storage/volumes): volumes of pools."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from corral.api import Operation, Volume, VolumeCreate, VolumeResize
from corral.engine.context import EngineContext
from corral.engine.routes.deps import Project, authenticated, context, listed, need, project_volume, visible
from corral.engine.services import volumes

VolumeName = Annotated[str, Depends(project_volume)]
router = APIRouter(prefix="/api/v1/storage", tags=["storage"],
                   dependencies=[Depends(authenticated)])


@router.get("/volumes", dependencies=need("volume.read"), response_model=list[Volume])
def list_all_volumes(projects: list[str] = Depends(listed("volume.read")),
                     ctx: EngineContext = Depends(context)) -> list[Volume]:
    """The project's volumes, in every pool."""
    return visible(volumes.list_volumes(ctx), projects)


@router.get("/pools/{pool}/volumes", dependencies=need("volume.read"), response_model=list[Volume])
def list_volumes(pool: str, projects: list[str] = Depends(listed("volume.read")),
                 ctx: EngineContext = Depends(context)) -> list[Volume]:
    return visible(volumes.list_volumes(ctx, pool), projects)


@router.post("/pools/{pool}/volumes", dependencies=need("volume.create"),
             status_code=202, response_model=Operation)
def create_volume(pool: str, req: VolumeCreate, project: Project,
                  ctx: EngineContext = Depends(context)) -> Operation:
    """A thin volume of the project; 409 when it would not fit in the pool's free space or
    in the project's quotas."""
    return volumes.create(ctx, pool, req, project)


@router.get("/pools/{pool}/volumes/{name}", dependencies=need("volume.read"), response_model=Volume)
def get_volume(pool: str, name: VolumeName, ctx: EngineContext = Depends(context)) -> Volume:
    return volumes.get(ctx, pool, name)


@router.post("/pools/{pool}/volumes/{name}/resize", dependencies=need("volume.update"),
             status_code=202, response_model=Operation)
def resize_volume(pool: str, name: VolumeName, req: VolumeResize,
                  ctx: EngineContext = Depends(context)) -> Operation:
    """Grow a volume (never shrink); an attached volume of a running VM grows live."""
    return volumes.resize(ctx, pool, name, req)


@router.delete("/pools/{pool}/volumes/{name}", dependencies=need("volume.delete"),
               status_code=202, response_model=Operation)
def delete_volume(pool: str, name: VolumeName, ctx: EngineContext = Depends(context)) -> Operation:
    """Refused (409) while the volume is attached to a VM."""
    return volumes.delete(ctx, pool, name)
