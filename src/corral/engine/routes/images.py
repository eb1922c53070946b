"""/api/v1/images: import, build the tiny guest, list, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api import Image, ImageBuildTiny, ImageImport, Operation
from corral.engine.context import EngineContext
from corral.engine.routes.deps import authenticated, context, need
from corral.engine.services import images

router = APIRouter(prefix="/api/v1/images", tags=["images"], dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("image.read"), response_model=list[Image])
def list_images(ctx: EngineContext = Depends(context)) -> list[Image]:
    return images.list_images(ctx)


@router.post("", dependencies=need("image.create"), status_code=202, response_model=Operation)
def import_image(req: ImageImport, ctx: EngineContext = Depends(context)) -> Operation:
    return images.import_image(ctx, req)


@router.post("/build-tiny", dependencies=need("image.create"), status_code=202, response_model=Operation)
def build_tiny(req: ImageBuildTiny, ctx: EngineContext = Depends(context)) -> Operation:
    return images.build_tiny(ctx, req)


@router.get("/{name}", dependencies=need("image.read"), response_model=Image)
def get_image(name: str, ctx: EngineContext = Depends(context)) -> Image:
    return images.get(ctx, name)


@router.delete("/{name}", dependencies=need("image.delete"), status_code=202, response_model=Operation)
def delete_image(name: str, ctx: EngineContext = Depends(context)) -> Operation:
    return images.delete(ctx, name)
