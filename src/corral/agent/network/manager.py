"""Bring a NAT network to its desired state on this host (this network namespace), or remove it.

``ensure_network`` runs in phases, Ganeti-style: check the spec (pure), check preconditions
(the bridge name is free or already a bridge, the subnet overlaps no route), then execute;
what this call created is undone if a later step fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from corral.agent.network import bridge, dnsmasq, nat
from corral.agent.network.routes import check_route_overlap
from corral.agent.network.spec import (
    Lease,
    NetworkSpec,
    validate_bridge_name,
    validate_network_name,
    validate_spec,
)
from corral.errors import CorralError

log = logging.getLogger(__name__)

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def _check_ids(spec: NetworkSpec) -> None:
    """The part of a spec that delete/status/leases need: names that reach paths and links."""
    validate_network_name(spec.name, "name")
    validate_bridge_name(spec.bridge)


def ensure_network(spec: NetworkSpec, state_dir: Path) -> None:
    """Create or repair the network; idempotent, safe to call at every agent start.

    A running dnsmasq is kept unless its config changed or the bridge had to be re-created.
    """
    validate_spec(spec)
    dnsmasq.Paths.of(spec, state_dir)  # checks state_dir before anything changes
    with _lock(spec.name):
        bridge.check_is_ours(spec, bridge.link(spec.bridge))
        check_route_overlap(spec.subnet, spec.bridge)
        undo: list[Callable[[], object]] = []
        try:
            if bridge.ensure(spec):
                created = True
                undo.append(lambda: bridge.delete(spec))
            else:
                created = False
            if spec.nat:
                nat.enable_ip_forward()
                if nat.ensure(spec):
                    undo.append(lambda: nat.delete(spec))
            else:
                nat.delete(spec)
            dnsmasq.ensure(spec, state_dir, restart=created)
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except Exception:
                    log.exception("network %s: undo after a failed ensure failed", spec.name)
            raise


def delete_network(spec: NetworkSpec, state_dir: Path) -> None:
    """Remove dnsmasq, the nftables chains, the bridge and the files; idempotent.

    Every step is tried even when an earlier one fails; the first error is raised at the end.
    """
    _check_ids(spec)
    paths = dnsmasq.Paths.of(spec, state_dir)
    errors: list[CorralError | OSError] = []
    with _lock(spec.name):
        steps: list[Callable[[], object]] = [
            lambda: dnsmasq.stop(paths),  # first: it is bound to the bridge
            lambda: nat.delete(spec),
            lambda: bridge.delete(spec),
            lambda: dnsmasq.delete(spec, state_dir),
        ]
        for step in steps:
            try:
                step()
            except (CorralError, OSError) as exc:
                log.warning("network %s: delete step failed: %s", spec.name, exc)
                errors.append(exc)
    if errors:
        raise errors[0]


def network_status(spec: NetworkSpec, state_dir: Path) -> dict[str, bool]:
    """``{"bridge": up?, "dnsmasq": running?, "nat": rules present?}``."""
    _check_ids(spec)
    return {
        "bridge": bridge.status(spec),
        "dnsmasq": dnsmasq.status(spec, state_dir),
        "nat": nat.status(spec),
    }


def leases(spec: NetworkSpec, state_dir: Path) -> list[Lease]:
    """The DHCP leases dnsmasq handed out on this network (IPv4)."""
    _check_ids(spec)
    return dnsmasq.leases(spec, state_dir)
