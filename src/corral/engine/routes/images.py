"""/api/v1/images: import, build the tiny guest, list, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from corral.api import Image, ImageBuildTiny, ImageImport, Operation, Shared
from corral.engine.context import EngineContext
from corral.engine.db.models import Image as ImageRow
from corral.engine.routes.deps import Project, authenticated, context, listed, need, owned, visible
from corral.engine.services import images, sharing

router = APIRouter(prefix="/api/v1/images", tags=["images"], dependencies=[Depends(authenticated)])
ImageName = Annotated[str, Depends(owned(ImageRow, "image"))]


@router.get("", dependencies=need("image.read"), response_model=list[Image])
def list_images(projects: list[str] = Depends(listed("image.read")),
                ctx: EngineContext = Depends(context)) -> list[Image]:
    """The project's images and the shared ones."""
    return visible(images.list_images(ctx), projects)


@router.post("", dependencies=need("image.create"), status_code=202, response_model=Operation)
def import_image(req: ImageImport, project: Project,
                 ctx: EngineContext = Depends(context)) -> Operation:
    return images.import_image(ctx, req, project)


@router.post("/build-tiny", dependencies=need("image.create"), status_code=202, response_model=Operation)
def build_tiny(req: ImageBuildTiny, project: Project,
               ctx: EngineContext = Depends(context)) -> Operation:
    return images.build_tiny(ctx, req, project)


@router.get("/{name}", dependencies=need("image.read"), response_model=Image)
def get_image(name: ImageName, ctx: EngineContext = Depends(context)) -> Image:
    return images.get(ctx, name)


@router.delete("/{name}", dependencies=need("image.delete"), status_code=202, response_model=Operation)
def delete_image(name: ImageName, ctx: EngineContext = Depends(context)) -> Operation:
    return images.delete(ctx, name)


@router.put("/{name}/shared", dependencies=need("project.update"), response_model=Shared)
def share_image(name: str, req: Shared, ctx: EngineContext = Depends(context)) -> Shared:
    """Share the image with every project, or stop (admins: an engine-wide right). Other
    projects may then use it, not change or delete it."""
    return Shared(shared=sharing.set_shared(ctx, "image", name, req.shared))
