"""What agents push to the engine (``POST /api/v1/agent/report``, mutual TLS): a heartbeat
every interval, and at once when a domain's lifecycle changes (libvirt's events).

The other way round from the rest of this package: the agent sends these, the engine
answers. A report carries a digest of the host's domains, not the list: the engine compares
it with its own view and asks the agent for the list only when they differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pydantic import Field

from corral.agent_api import Answer, Body


class DomainEvent(Body):
    """One libvirt lifecycle event of a domain, as it happened."""

    name: str
    vm_id: str | None = None
    event: str  # started, stopped, crashed, suspended, resumed, shutdown, defined, undefined
    detail: str = ""  # libvirt's detail, e.g. "destroyed", "migrated", "shutdown"
    state: str  # the domain's state after it (corral.agent_api.domains.DomainState)


class Membership(Body):
    """The cluster membership as this host's quorum provider (corosync votequorum) sees it:
    the engine derives who is in the quorate membership from its peers' reports."""

    quorate: bool
    members: list[str] = Field(default_factory=list, max_length=1000,
                               description="Node names (corral host names) of the members")
    ring_id: str = Field("", max_length=100, description="corosync's ring id of this view")


class LeaseState(Body):
    """The host's lease as its guard holds it (`corral agent guard`, corral.agent.guard)."""

    armed: bool = Field(description="The guard enforces it: the engine said the host has HA "
                        "VMs, and it kills the host's QEMUs when it lapses")
    left_s: float = Field(description="Until it lapses (negative: lapsed)")
    self_fenced: bool = Field(False, description="It lapsed and the guard killed the host's "
                              "QEMUs; not renewed since")


class HostReport(Body):
    boot_id: str = Field(description="Changes each time the agent starts: a new one means "
                         "the engine must ask again what it knows of the host")
    seq: int = Field(ge=0, description="Counts the agent's reports since it started")
    interval_s: float = Field(gt=0, description="When the next heartbeat is due at the latest")
    digest: str = Field(description="domains_digest of the host's domains of corral VMs")
    domains: int = Field(ge=0, description="How many domains the host has")
    load_1m: float = Field(ge=0, description="The host's load average over a minute")
    memory_available_mib: int = Field(ge=0)
    # Load of the host measured from its own VMs (the load average is the machine's: lab
    # hosts share one). Optional: an older agent sends none, and the balancer skips it.
    cpu_percent: float | None = Field(None, ge=0, le=100, description="What the host's "
                                      "running VMs used of its CPUs since the last report")
    memory_used_percent: float | None = Field(None, ge=0, le=100, description="Memory in "
                                              "use on the host (total less available)")
    vm_cpus: dict[str, float] = Field(default_factory=dict, max_length=10_000, description=(
        "CPUs' worth each running VM (by id) used since the last report: 1.0 is one CPU "
        "busy all the time"))
    events: list[DomainEvent] = Field(default_factory=list, max_length=1000)
    # HA (optional: an agent with no quorum provider or no guard sends none).
    membership: Membership | None = None
    lease: LeaseState | None = None


class ReportAnswer(Answer):
    host: str  # the name the engine knows this host by
    status: str  # the host's state as the engine sees it now
    # The host's lease, renewed by this answer from when the report was sent: how long it
    # holds (cluster setting ha.lease_s) and whether the guard must enforce it (the host
    # has HA VMs). None from an engine that predates leases: the guard keeps what it had.
    lease_s: float | None = None
    arm_lease: bool | None = None
    # SHA-256 of the cluster's corosync files (CorosyncFiles): an agent that keeps them
    # (`corral agent run --corosync-conf PATH`) fetches them when its own differ.
    corosync_digest: str | None = None


class CorosyncFiles(Answer):
    """``GET /api/v1/agent/corosync`` (mutual TLS): what every host's corosync needs, the
    same for all, rendered by the engine from its hosts (engine/services/ha_corosync.py)."""

    conf: str  # corosync.conf
    authkey: str  # /etc/corosync/authkey, base64
    digest: str  # SHA-256 over both (as ReportAnswer.corosync_digest)


def domains_digest(states: Iterable[tuple[str, str]]) -> str:
    """SHA-256 over (VM id, state) pairs in any order: equal on both sides exactly when the
    engine's rows and the host's domains agree."""
    lines = sorted(f"{vm_id}={state}" for vm_id, state in states)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
