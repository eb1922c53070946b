"""Bring a network to its desired state on this host (this network namespace), or remove it.

``ensure_network`` runs in phases, Ganeti-style: check the spec (pure), check preconditions
(device names free or already of the right kind, no bridge of another corral node on this
machine (``owner``), the subnet overlaps no route, a bridge-mode network's bridge exists),
then execute; what this call created is undone if a later step
fails, so a refused or failed network leaves no bridge, port, dnsmasq or rules behind.
The devices of each layout are listed in ``spec``'s docstring.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from corral.agent.network import _cmd, bridge, dnsmasq, nat, overlay, ovs
from corral.agent.network import owner as ownership
from corral.agent.network.routes import check_route_overlap
from corral.agent_api.networks import (
    Lease,
    NetworkSpec,
    validate_bridge_name,
    validate_network_name,
    validate_spec,
)
from corral.errors import Conflict, CorralError, NotFound, Unavailable

log = logging.getLogger(__name__)

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
# Networks may share a trunk bridge (VLANs): changes to shared devices, one at a time.
_shared = threading.RLock()

Undo = list[Callable[[], object]]


def _lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def _check_ids(spec: NetworkSpec) -> None:
    """The part of a spec that delete/status/leases need: names that reach paths and links."""
    validate_network_name(spec.name, "name")
    validate_bridge_name(spec.bridge)


def _preconditions(spec: NetworkSpec, dry_run: bool = False,
                   owner: str | None = None) -> ovs.OvsPaths | None:
    """No side effects on the network itself (OVS daemons are started unless ``dry_run``).

    ``owner``: this node (``owner.owner_of``); a Linux bridge of another node is refused.
    """
    paths = None
    if spec.backend == "ovs":
        if dry_run:
            for tool in ("ovs-vsctl", "ovsdb-tool", *ovs.DAEMONS):
                _cmd.which(tool)
            probe = ovs.OvsPaths.from_env()
            exists = ovs.running(probe) and ovs.bridge_exists(probe, spec.bridge)
        else:
            paths = ovs.ensure_daemons()
            exists = ovs.bridge_exists(paths, spec.bridge)
        if not spec.managed and not exists:
            raise NotFound(f"Open vSwitch bridge {spec.bridge} does not exist on this host; "
                           "bridge mode joins an existing bridge", field="bridge")
        if not exists and bridge.link(spec.bridge) is not None:
            found = bridge.kind(bridge.link(spec.bridge)) or "physical or unknown"
            raise Conflict(f"interface {spec.bridge!r} exists and is not an Open vSwitch "
                           f"bridge (it is {found}); choose another bridge name", field="bridge")
    else:
        info = bridge.check_kind(spec.bridge, "bridge")
        if not spec.managed and info is None:
            raise NotFound(f"bridge {spec.bridge} does not exist on this host; bridge mode "
                           "joins an existing bridge", field="bridge")
        if spec.managed and owner is not None:  # bridge mode joins a bridge it never owns
            ownership.check(spec.bridge, info, owner)
        if spec.vlan is not None:
            if dry_run and bridge.vlan_filtering_supported() is False:
                raise Unavailable(bridge.VLAN_UNSUPPORTED, field="vlan")
            if spec.access_bridge == spec.bridge:
                raise Conflict("bridge name is taken by corral's own devices", field="bridge")
            access = bridge.check_kind(spec.access_bridge, "bridge", "network")
            if owner is not None:
                ownership.check(spec.access_bridge, access, owner)
            for end in spec.veth_pair:
                bridge.check_kind(end, "veth", "network")
    if spec.vxlan_device:
        bridge.check_kind(spec.vxlan_device, "vxlan", "vni")
    if spec.serves:
        assert spec.subnet is not None and spec.l3_device is not None
        check_route_overlap(spec.subnet, spec.l3_device, owner)
    return paths


def check_network(spec: NetworkSpec, state_dir: Path | None = None) -> None:
    """The dry run of ``ensure_network``: every check it makes before it changes anything
    (the spec, interface names, host routes, a bridge-mode bridge), and no change.
    ``state_dir`` (the networks dir, as ``ensure_network`` gets it) adds the check that no
    bridge of the network belongs to another corral node."""
    validate_spec(spec)
    _preconditions(spec, dry_run=True,
                   owner=ownership.owner_of(state_dir) if state_dir is not None else None)


def _bridge_mac(spec: NetworkSpec, owner: str) -> str:
    """The gateway's MAC is fixed (guests' ARP caches), on whichever host serves now. A host
    that only carries an overlay segment must not keep it (frames for the gateway would
    stay on its bridge): after the server moved off it, its bridge takes a MAC of its own."""
    return bridge.bridge_mac(spec) if spec.serves else bridge.mac_of(
        f"corral-carrier:{spec.name}:{owner}")


def restored(spec: NetworkSpec, state_dir: Path) -> NetworkSpec:
    """The spec an agent rebuilds at its start, before the engine speaks. An overlay network
    it served is served again only if its dnsmasq still runs (only the agent restarted):
    after a host boot, the engine may have moved the server off it (fenced) and two DHCP
    servers on one segment hand out one address twice. It carries the segment until the
    engine's catch-up (host_sync) says whether it serves."""
    if spec.vni is None or not spec.serves:
        return spec
    if dnsmasq.running_pid(dnsmasq.Paths.of(spec, state_dir)) is not None:
        return spec
    return spec.model_copy(update={"serve": False})


def _build_linux(spec: NetworkSpec, undo: Undo, owner: str) -> bool:
    """Bridges (and the VLAN veth pair); True when the gateway device is new."""
    mac = _bridge_mac(spec, owner)
    if spec.vlan is None:
        if not spec.managed:
            return False
        created = bridge.ensure_bridge(spec.bridge, mac, owner=owner)
        if created:
            undo.append(lambda: bridge.delete_link(spec.bridge, "bridge"))
        return created
    with _shared:  # a bridge-mode network's trunk is the host's: never stamped
        trunk_owner = owner if spec.managed else None
        if bridge.ensure_bridge(spec.bridge, None, owner=trunk_owner, vlan_filtering=True):
            undo.append(lambda: _delete_trunk_if_unused(spec))
    created = bridge.ensure_bridge(spec.access_bridge, mac, owner=owner)
    if created:
        undo.append(lambda: bridge.delete_link(spec.access_bridge, "bridge"))
    if bridge.ensure_veth_to_trunk(spec):
        undo.append(lambda: bridge.delete_link(spec.veth_pair[0], "veth"))
    return created


def _build_ovs(spec: NetworkSpec, paths: ovs.OvsPaths, undo: Undo, owner: str) -> bool:
    """The OVS bridge (and the VLAN gateway port); True when the gateway device is new."""
    if not spec.managed:
        return False
    mac = _bridge_mac(spec, owner)
    with _shared:
        made = ovs.ensure_bridge(paths, spec.bridge, mac if spec.vlan is None else None)
    if made:
        undo.append(lambda: ovs.delete_bridge(paths, spec.bridge))
    if spec.vlan is None:
        if spec.mtu:
            ovs.vsctl(paths, "set", "interface", spec.bridge, f"mtu_request={spec.mtu}")
        return made
    if not spec.serves:
        return made
    created = ovs.ensure_port(paths, spec.bridge, spec.gateway_port, tag=spec.vlan,
                              internal=True, mac=mac, mtu=spec.mtu)
    if created:
        undo.append(lambda: ovs.delete_port(paths, spec.gateway_port))
    return created or made


def _build_overlay(spec: NetworkSpec, paths: ovs.OvsPaths | None, undo: Undo) -> None:
    device = spec.vxlan_device
    if device is None:
        return
    if overlay.ensure_device(spec):
        undo.append(lambda: overlay.delete(spec))
    overlay.sync_peers(spec)
    if paths is not None:
        if ovs.ensure_port(paths, spec.bridge, device, tag=spec.vlan):
            undo.append(lambda: ovs.delete_port(paths, device))
    else:
        _cmd.run(["ip", "link", "set", "dev", device, "master", spec.port_bridge])


def ensure_network(spec: NetworkSpec, state_dir: Path) -> None:
    """Create or repair the network; idempotent, safe to call at every agent start.

    A running dnsmasq is kept unless its config changed or its device had to be re-created.
    """
    validate_spec(spec)
    dnsmasq.Paths.of(spec, state_dir)  # checks state_dir before anything changes
    owner = ownership.owner_of(state_dir)
    with _lock(spec.name):
        paths = _preconditions(spec, owner=owner)
        undo: Undo = []
        try:
            created = (_build_ovs(spec, paths, undo, owner) if paths
                       else _build_linux(spec, undo, owner))
            _build_overlay(spec, paths, undo)
            if spec.serves:
                assert spec.l3_device is not None
                # a Linux bridge made now is up and bare; an OVS port still needs "up"
                bridge.ensure_address(spec.l3_device, spec, fresh=created and paths is None)
                if spec.kind in ("nat", "routed"):
                    nat.enable_ip_forward()
                if nat.ensure(spec):
                    undo.append(lambda: nat.delete(spec))
                dnsmasq.ensure(spec, state_dir, restart=created)
            elif spec.managed:  # another host serves it (now): nothing of a gateway here
                dnsmasq.stop(dnsmasq.Paths.of(spec, state_dir))
                nat.delete(spec)
                if paths is not None and spec.vlan is not None:
                    ovs.delete_port(paths, spec.gateway_port)
                elif spec.l3_device and bridge.link(spec.l3_device) is not None:
                    _cmd.run(["ip", "-4", "addr", "flush", "dev", spec.l3_device])
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except Exception:
                    log.exception("network %s: undo after a failed ensure failed", spec.name)
            raise


def _delete_trunk_if_unused(spec: NetworkSpec) -> None:
    """A VLAN trunk corral made goes with its last port (another network's, a NIC)."""
    with _shared:
        if spec.managed and bridge.link(spec.bridge) is not None and \
                not bridge.ports(spec.bridge):
            bridge.delete_link(spec.bridge, "bridge")


def _delete_ovs_bridge_if_unused(spec: NetworkSpec, paths: ovs.OvsPaths) -> None:
    with _shared:
        if spec.managed and ovs.bridge_exists(paths, spec.bridge) and \
                not ovs.list_ports(paths, spec.bridge):
            ovs.delete_bridge(paths, spec.bridge)


def _others_devices(spec: NetworkSpec, owner: str) -> dict[str, str]:
    """The spec's Linux bridges that belong to another corral node: name -> its data dir."""
    if spec.backend != "linuxbridge":
        return {}
    names = [spec.bridge] if spec.vlan is None else [spec.bridge, spec.access_bridge]
    out: dict[str, str] = {}
    try:
        for name in names:
            info = bridge.link(name)
            if info is None:
                continue
            served = dnsmasq.served_devices() if not info.get("ifalias") else {}
            other = ownership.foreign(info, owner, served)
            if other is not None:
                log.warning("network %s: bridge %s belongs to the corral node in %s; kept",
                            spec.name, name, ownership.node_dir(other))
                out[name] = ownership.node_dir(other)
    except CorralError as exc:  # no `ip`: the delete steps will say so
        log.warning("network %s: owners of its bridges unknown: %s", spec.name, exc)
    return out


def delete_network(spec: NetworkSpec, state_dir: Path, *, keep_bridge: bool = False) -> None:
    """Remove dnsmasq, the rules, the devices corral made and the files; idempotent.

    ``keep_bridge``: another network still uses the (trunk) bridge. A bridge-mode network's
    bridge is never removed, nor a bridge of another corral node (its alias), nor that
    bridge's rules (chains are named by device). Every step is tried even when an earlier
    one fails; the first error is raised at the end.
    """
    _check_ids(spec)
    paths_dns = dnsmasq.Paths.of(spec, state_dir)
    others = _others_devices(spec, ownership.owner_of(state_dir))
    errors: list[CorralError | OSError] = []
    steps: list[Callable[[], object]] = [
        lambda: dnsmasq.stop(paths_dns),  # first: it is bound to the gateway device
    ]
    if (spec.l3_device or spec.bridge) not in others:
        steps.append(lambda: nat.delete(spec))
    if spec.backend == "ovs":
        have_ovs = True
        try:
            ovs_paths = ovs.ensure_daemons()
        except CorralError as exc:  # OVS gone or never installed: nothing of ours in it
            log.warning("network %s: no Open vSwitch to clean up: %s", spec.name, exc)
            have_ovs = False
        if have_ovs:
            if spec.vxlan_device:
                steps.append(lambda: ovs.delete_port(ovs_paths, str(spec.vxlan_device)))
            if spec.vlan is not None and spec.managed:
                steps.append(lambda: ovs.delete_port(ovs_paths, spec.gateway_port))
            if spec.managed and not keep_bridge:
                if spec.vlan is None:
                    steps.append(lambda: ovs.delete_bridge(ovs_paths, spec.bridge))
                else:
                    steps.append(lambda: _delete_ovs_bridge_if_unused(spec, ovs_paths))
    steps.append(lambda: overlay.delete(spec))
    if spec.backend == "linuxbridge":
        keep_bridge = keep_bridge or spec.bridge in others
        if spec.vlan is not None:
            if spec.access_bridge not in others:
                steps += [
                    lambda: bridge.delete_link(spec.veth_pair[0], "veth"),
                    lambda: bridge.delete_link(spec.access_bridge, "bridge"),
                ]
            if not keep_bridge:
                steps.append(lambda: _delete_trunk_if_unused(spec))
        elif spec.managed and not keep_bridge:
            steps.append(lambda: bridge.delete_link(spec.bridge, "bridge"))
    steps.append(lambda: dnsmasq.delete(spec, state_dir))
    with _lock(spec.name), _shared:
        for step in steps:
            try:
                step()
            except (CorralError, OSError) as exc:
                log.warning("network %s: delete step failed: %s", spec.name, exc)
                errors.append(exc)
    if errors:
        raise errors[0]


def network_status(spec: NetworkSpec, state_dir: Path) -> dict[str, bool]:
    """What of the network is in place: ``bridge`` (the gateway's bridge, or the joined bridge),
    ``dnsmasq`` and ``nat`` (masquerade), plus ``isolation`` (isolated), ``vlan`` (the
    VLAN link or gateway port), ``overlay`` (VXLAN with exactly the peers) where they apply."""
    _check_ids(spec)
    out: dict[str, bool] = {}
    paths = ovs.OvsPaths.from_env() if spec.backend == "ovs" else None
    if paths is not None:
        try:
            out["bridge"] = ovs.running(paths) and ovs.bridge_exists(paths, spec.bridge)
        except CorralError:
            out["bridge"] = False
    else:
        out["bridge"] = bridge.bridge_up(spec.port_bridge)
    if spec.serves:
        out["dnsmasq"] = dnsmasq.status(spec, state_dir)
        out["nat"] = spec.kind == "nat" and nat.status(spec)
        if spec.kind == "isolated":
            out["isolation"] = nat.status(spec)
    if spec.vlan is not None:
        if paths is not None:
            out["vlan"] = (not spec.serves) or (
                out["bridge"] and ovs.port_bridge(paths, spec.gateway_port) == spec.bridge
                and ovs.port_tag(paths, spec.gateway_port) == spec.vlan)
        else:
            out["vlan"] = bridge.veth_status(spec)
    if spec.vni is not None:
        out["overlay"] = overlay.status(spec)
    return out


def leases(spec: NetworkSpec, state_dir: Path) -> list[Lease]:
    """The DHCP leases dnsmasq handed out on this network (IPv4)."""
    _check_ids(spec)
    return dnsmasq.leases(spec, state_dir)
