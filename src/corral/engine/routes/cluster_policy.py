"""/api/v1/cluster/policy: load balancing (`corral cluster policy set|show`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from corral.api.cluster_policy import ClusterPolicy, ClusterPolicySet
from corral.engine.balance_loop import Balancer
from corral.engine.context import EngineContext
from corral.engine.routes.deps import context, need
from corral.engine.services import balancing

router = APIRouter(prefix="/api/v1/cluster/policy", tags=["cluster"])


def _balancer(request: Request) -> Balancer:
    balancer: Balancer = request.app.state.balancer
    return balancer


@router.get("", response_model=ClusterPolicy, dependencies=need("cluster.read"))
def show_policy(balancer: Balancer = Depends(_balancer)) -> ClusterPolicy:
    """The policy, each host's load (last report, means over the window, the thresholds it
    stays above) and the balancer's recent decisions, newest first."""
    return balancer.show()


@router.put("", response_model=ClusterPolicy, dependencies=need("cluster.update"))
def set_policy(req: ClusterPolicySet, ctx: EngineContext = Depends(context),
               balancer: Balancer = Depends(_balancer)) -> ClusterPolicy:
    """Set the policy (the ``balance.*`` cluster settings, all at once; 422 naming a field
    that is not valid). ``none`` stops balancing; a migration under way runs to its end."""
    balancing.set_policy(ctx, req)
    return balancer.show()
