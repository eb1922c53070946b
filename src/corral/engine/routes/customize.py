"""Offline guest customization: POST /api/v1/images/{name}/customize and /api/v1/vms/{name}/customize.

One use case on two resources (corral.engine.services.customize), kept in one route file.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from corral.api import GuestCustomize, Operation
from corral.engine.context import EngineContext
from corral.engine.db.models import Image
from corral.engine.routes.deps import VmName, authenticated, context, need, owned
from corral.engine.services import customize

router = APIRouter(prefix="/api/v1", tags=["customize"], dependencies=[Depends(authenticated)])
ImageName = Annotated[str, Depends(owned(Image, "image"))]


@router.post("/images/{name}/customize", dependencies=need("image.update"),
             status_code=202, response_model=Operation)
def customize_image(name: ImageName, req: GuestCustomize, ctx: EngineContext = Depends(context)) -> Operation:
    """Set a hostname, inject files, set passwords, run commands in an image no VM uses yet."""
    return customize.customize_image(ctx, name, req)


@router.post("/vms/{name}/customize", dependencies=need("vm.update"),
             status_code=202, response_model=Operation)
def customize_vm(name: VmName, req: GuestCustomize, ctx: EngineContext = Depends(context)) -> Operation:
    """The same on the disk of a stopped VM."""
    return customize.customize_vm(ctx, name, req)
