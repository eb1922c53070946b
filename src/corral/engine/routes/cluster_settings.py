"""/api/v1/cluster/settings: the settings of the whole cluster (admins set them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api.cluster_settings import ClusterSetting, ClusterSettingSet
from corral.engine.context import EngineContext
from corral.engine.routes.deps import context, need
from corral.engine.services import cluster_settings

router = APIRouter(prefix="/api/v1/cluster/settings", tags=["cluster"])


@router.get("", response_model=list[ClusterSetting], dependencies=need("cluster.read"))
def list_settings(ctx: EngineContext = Depends(context)) -> list[ClusterSetting]:
    """Every setting: what applies now, its default, whether an admin set it, what it does."""
    return cluster_settings.listing(ctx)


@router.get("/{key}", response_model=ClusterSetting, dependencies=need("cluster.read"))
def show_setting(key: str, ctx: EngineContext = Depends(context)) -> ClusterSetting:
    return cluster_settings.show(ctx, key)


@router.put("/{key}", response_model=ClusterSetting, dependencies=need("cluster.update"))
def set_setting(key: str, req: ClusterSettingSet,
                ctx: EngineContext = Depends(context)) -> ClusterSetting:
    """Set a setting (422 naming it when the value is not of its kind); it applies to what
    starts from now on (a migration under way keeps the settings it started with)."""
    return cluster_settings.set_value(ctx, key, req.value)


@router.delete("/{key}", response_model=ClusterSetting, dependencies=need("cluster.update"))
def unset_setting(key: str, ctx: EngineContext = Depends(context)) -> ClusterSetting:
    """Back to the default."""
    return cluster_settings.unset(ctx, key)
