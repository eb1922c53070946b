"""/api/v1/networks: create, list, show, delete networks; their DHCP leases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from corral.api import Network, NetworkCreate, Operation, Shared
from corral.engine.context import EngineContext
from corral.engine.db.models import Network as NetworkRow
from corral.engine.routes.deps import Project, authenticated, context, listed, need, owned, visible
from corral.engine.services import networks, sharing

router = APIRouter(prefix="/api/v1/networks", tags=["networks"],
                   dependencies=[Depends(authenticated)])
NetworkName = Annotated[str, Depends(owned(NetworkRow, "network"))]


@router.get("", dependencies=need("network.read"), response_model=list[Network])
def list_networks(projects: list[str] = Depends(listed("network.read")),
                  ctx: EngineContext = Depends(context)) -> list[Network]:
    """The project's networks and the shared ones."""
    return visible(networks.list_networks(ctx), projects)


@router.post("", dependencies=need("network.create"), status_code=202, response_model=Operation)
def create_network(req: NetworkCreate, project: Project,
                   ctx: EngineContext = Depends(context)) -> Operation:
    return networks.create(ctx, req, project)


@router.get("/{name}", dependencies=need("network.read"), response_model=Network)
def get_network(name: NetworkName, ctx: EngineContext = Depends(context)) -> Network:
    return networks.get(ctx, name)


@router.delete("/{name}", dependencies=need("network.delete"), status_code=202, response_model=Operation)
def delete_network(name: NetworkName, ctx: EngineContext = Depends(context)) -> Operation:
    return networks.delete(ctx, name)


@router.get("/{name}/leases", dependencies=need("network.read"))
def network_leases(name: NetworkName, ctx: EngineContext = Depends(context)) -> list[dict[str, Any]]:
    return networks.leases(ctx, name)


@router.put("/{name}/shared", dependencies=need("project.update"), response_model=Shared)
def share_network(name: str, req: Shared, ctx: EngineContext = Depends(context)) -> Shared:
    """Share the network with every project, or stop (admins: an engine-wide right). Other
    projects may then use it, not change or delete it."""
    return Shared(shared=sharing.set_shared(ctx, "network", name, req.shared))
