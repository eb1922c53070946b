"""/api/v1/hosts/{name}/fence and .../power: a host's fence methods, their test, and power
management through them (corral.engine.services.fencing)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from corral.api import Operation
from corral.api.fencing import MAX_METHODS, FenceMethod, FenceMethodSet, FenceTest, HostPowerSet
from corral.engine.context import EngineContext
from corral.engine.routes.deps import authenticated, context, need
from corral.engine.services import fence_config, fencing

router = APIRouter(prefix="/api/v1/hosts", tags=["hosts"], dependencies=[Depends(authenticated)])


@router.get("/{name}/fence", dependencies=need("host.read"), response_model=list[FenceMethod])
def show_fence(name: str, ctx: EngineContext = Depends(context)) -> list[FenceMethod]:
    """The host's fence methods in order; secret options are named, never shown."""
    return fence_config.show(ctx, name)


@router.put("/{name}/fence", dependencies=need("host.fence"), response_model=FenceMethod)
def set_fence(name: str, req: FenceMethodSet,
              ctx: EngineContext = Depends(context)) -> FenceMethod:
    """Add a fence method (after the last), or replace the one at ``position``. 422 for an
    agent name that is not fence_... or is not installed, or an option value with a line
    break."""
    return fence_config.set_method(ctx, name, req)


@router.delete("/{name}/fence", dependencies=need("host.fence"),
               response_model=list[FenceMethod])
def remove_fence(name: str, position: int | None = Query(None, ge=1, le=MAX_METHODS,
                                                         description="This method only; "
                                                         "none: every method"),
                 ctx: EngineContext = Depends(context)) -> list[FenceMethod]:
    """Remove one fence method (or all); the methods left."""
    return fence_config.remove(ctx, name, position)


@router.post("/{name}/fence/test", dependencies=need("host.fence"), response_model=FenceTest)
def test_fence(name: str, ctx: EngineContext = Depends(context)) -> FenceTest:
    """Ask every method's agent for the host's power (`status`); nothing is powered. 409
    for a host without a method."""
    return fencing.test(ctx, name)


@router.post("/{name}/power", dependencies=need("host.power"), status_code=202,
             response_model=Operation)
def power(name: str, req: HostPowerSet, ctx: EngineContext = Depends(context)) -> Operation:
    """Power the host's machine on, off, or cycle it, through its fence methods (the first
    that confirms wins). 409 for a host without a method, or for off and cycle while VMs
    run on it (named) unless ``force``."""
    return fencing.submit_power(ctx, name, req.action, req.force)
