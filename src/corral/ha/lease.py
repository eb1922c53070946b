"""A host's side of HA: how long it may keep its HA VMs running (the lease), and when it
must stop them itself (self-fencing, as a watchdog would).

The lease is renewed by an answer of the engine (counted from when the request was *sent*,
so the host's lease never outlives the one the engine counts from the answer's arrival) and
by the host being in the quorate membership. Where there is no quorum provider the lease is
not enforced: the engine then brings a lost host's VMs back only once its fencing confirmed
it off (corral.ha.policy), so running on is safe, and an engine outage stops nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HostLease:
    lease_s: float
    enforced: bool = True  # False: no quorum provider, never self-fence
    until: float = float("-inf")

    def renew(self, at: float) -> None:
        """Renewed as of ``at`` (the send time of an answered report, or a quorate check)."""
        self.until = max(self.until, at + self.lease_s)

    def lapsed(self, now: float) -> bool:
        """True when the host must stop its HA VMs now."""
        return self.enforced and now >= self.until

    def left_s(self, now: float) -> float:
        return self.until - now
