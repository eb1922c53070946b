"""What the HA decisions see and decide. Times are seconds on the engine's monotonic clock
(``now`` and every ``*_at``): only differences are ever used, so a jump of the wall clock
changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Fence(StrEnum):
    """Where a host's power fencing stands, as the engine knows it."""

    NONE = "none"  # nothing asked (or the host came back since)
    FENCING = "fencing"  # a fence run is under way
    CONFIRMED = "confirmed"  # its device said `off` (status), after an `off`
    FAILED = "failed"  # the last run could not confirm off (the reason says why)


class Quorum(StrEnum):
    """The host as its peers' membership reports show it (corosync votequorum)."""

    UNKNOWN = "unknown"  # no membership reported (no quorum provider on this cluster)
    IN = "in"  # a member of the quorate membership
    OUT = "out"  # the quorate membership has left it out (since ``out_since``)


@dataclass(frozen=True)
class Settings:
    """``detect_s``: silence before a host is lost; ``lease_s``: how long a host keeps its HA
    VMs running with neither the engine nor a quorum behind it; ``margin_s``: added to the
    lease before the engine believes it lapsed (the host's kill and the clocks' skew);
    ``fence_retry_s``: a failed fence is tried again after this."""

    detect_s: float = 3.0
    lease_s: float = 10.0
    margin_s: float = 2.0
    fence_retry_s: float = 5.0


@dataclass(frozen=True)
class HostView:
    name: str
    last_heard: float  # its last report (the engine's start, when none since)
    maintenance: bool = False  # an admin's: never lost, never fenced
    fence_configured: bool = False
    fence: Fence = Fence.NONE
    fence_at: float = 0.0  # when ``fence`` last changed
    fence_reason: str = ""  # why the last run failed
    quorum: Quorum = Quorum.UNKNOWN
    out_since: float = 0.0  # when the engine first heard it was out of the quorate membership
    # Its guard holds an armed lease (its last report said so): only then does a lapsed
    # lease mean its VMs are stopped. A host with no guard, or one not armed yet, must be
    # power-fenced.
    lease_armed: bool = False


@dataclass(frozen=True)
class VmView:
    name: str
    host: str | None  # where its row says it is (None: nowhere)
    ha: bool
    priority: int = 0  # higher first
    wants_running: bool = True
    busy: bool = False  # an operation holds it (its operation owns it)


@dataclass(frozen=True)
class ClusterView:
    now: float
    hosts: tuple[HostView, ...]
    vms: tuple[VmView, ...]
    settings: Settings = Settings()


@dataclass
class Decision:
    """One round of the engine's HA. ``lost``: hosts to mark unresponsive; ``fence``: hosts
    to fence now; ``recover``: VMs to start on another host, in this order (their old host
    can no longer run them); ``targets``: the hosts they may go to; ``safe``: hosts whose VMs
    cannot be running (fenced, or lease lapsed out of quorum), with how it is known;
    ``waiting``: VM → why it is not recovered (yet); ``hosts``: host → its HA state in
    words (`corral ha status`)."""

    lost: list[str] = field(default_factory=list)
    fence: list[str] = field(default_factory=list)
    recover: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    safe: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
