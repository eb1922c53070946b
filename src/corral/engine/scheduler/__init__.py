"""Placement of VMs on hosts: filters (hard rules) then weights, a pure module with no I/O.

``place(hosts, request, policy)`` (or a :class:`Cluster` kept across placements) returns a
:class:`Placement`: the chosen host or None, and for every host whether it was eligible and
why not. A refusal is an explanation; ``insufficient(placement)`` makes it the API's 409.
"""

from corral.engine.scheduler.explain import insufficient, render, summary
from corral.engine.scheduler.filters import FILTERS, Context, Reason, check, eligible
from corral.engine.scheduler.model import (
    HOST_MODEL,
    HOST_PASSTHROUGH,
    Group,
    GroupPolicy,
    GuestOnHost,
    HostState,
    HostView,
    Policy,
    Request,
    Strategy,
)
from corral.engine.scheduler.placement import Cluster, Placement, Verdict, place
from corral.engine.scheduler.weights import Weight

__all__ = [
    "FILTERS", "HOST_MODEL", "HOST_PASSTHROUGH", "Cluster", "Context", "Group", "GroupPolicy",
    "GuestOnHost", "HostState", "HostView", "Placement", "Policy", "Reason", "Request",
    "Strategy", "Verdict", "Weight", "check", "eligible", "insufficient", "place", "render",
    "summary",
]
