"""The engine's HA decisions, pure: from what it has heard (a ClusterView), which hosts are
lost, which to fence, and which HA VMs may start again elsewhere.

The one rule everything here serves: a VM is started elsewhere only when its old host
cannot be running it — its power fencing confirmed off after its last report, or it has
been out of the quorate membership and silent for longer than the lease it may keep its VMs
on, plus a margin (it stopped them itself: corral.ha.lease). A host that is silent but still
in the quorate membership is alive and cut off from the engine alone: it is neither fenced
nor robbed of its VMs. Nothing else counts: not a timeout alone, not an agent's error.
"""

from __future__ import annotations

from corral.ha.model import ClusterView, Decision, Fence, HostView, Quorum, VmView


def silent_s(view: ClusterView, host: HostView) -> float:
    return view.now - host.last_heard


def is_lost(view: ClusterView, host: HostView) -> bool:
    """Silent for ``detect_s`` (a host in maintenance is never taken for a lost one)."""
    return not host.maintenance and silent_s(view, host) >= view.settings.detect_s


def fenced(host: HostView) -> bool:
    """Its device confirmed off after its last report (a host heard since came back)."""
    return host.fence is Fence.CONFIRMED and host.fence_at >= host.last_heard


def lease_lapsed(view: ClusterView, host: HostView) -> bool:
    """Out of the quorate membership, and neither the engine nor a quorum has renewed its
    armed lease for ``lease_s`` + ``margin_s``: its guard has stopped its HA VMs."""
    if host.quorum is not Quorum.OUT or not host.lease_armed:
        return False
    since = max(host.last_heard, host.out_since)
    return view.now - since >= view.settings.lease_s + view.settings.margin_s


def safe_because(view: ClusterView, host: HostView) -> str | None:
    """Why the lost ``host`` cannot be running its VMs, or None while it might be."""
    if not is_lost(view, host):
        return None
    if fenced(host):
        return "fenced: its power is confirmed off"
    if lease_lapsed(view, host):
        return (f"its lease lapsed: out of the quorate membership and silent for "
                f"{view.now - max(host.last_heard, host.out_since):.1f} s")
    return None


def _needs_fencing(view: ClusterView, host: HostView) -> bool:
    if not host.fence_configured or host.quorum is Quorum.IN or fenced(host):
        return False
    if host.fence is Fence.FENCING:
        return False
    if host.fence is Fence.FAILED:
        return view.now - host.fence_at >= view.settings.fence_retry_s
    return True


def _unsafe_reason(view: ClusterView, host: HostView) -> str:
    """Why the VMs of the lost ``host`` wait, in words."""
    s = view.settings
    if host.quorum is Quorum.IN:
        return (f"{host.name} is silent but still in the quorate membership: alive and cut "
                f"off from the engine only, it keeps its VMs")
    if host.fence is Fence.FENCING:
        return f"{host.name} is being fenced"
    if host.fence is Fence.FAILED:
        left = max(0.0, s.fence_retry_s - (view.now - host.fence_at))
        return (f"fencing {host.name} failed ({host.fence_reason or 'no reason given'}); "
                f"tried again in {left:.0f} s")
    if host.quorum is Quorum.OUT and host.lease_armed:
        left = s.lease_s + s.margin_s - (view.now - max(host.last_heard, host.out_since))
        return f"{host.name} is out of quorum: its lease lapses in {max(0.0, left):.1f} s"
    if host.quorum is Quorum.OUT and not host.fence_configured:
        return (f"{host.name} is out of quorum but held no armed lease (no guard, or armed "
                f"too late): only its fencing could say it is off; its VMs stay down until "
                f"`corral host fence set {host.name}` can confirm it")
    if not host.fence_configured:
        return (f"{host.name} has no fence method and no quorum tells whether it is down: "
                f"its VMs stay down until `corral host fence set {host.name}` can confirm it "
                f"off")
    return f"{host.name} is to be fenced"


def _host_words(view: ClusterView, host: HostView, safe: str | None) -> str:
    if host.maintenance:
        return "maintenance"
    if not is_lost(view, host):
        return "up" if host.quorum is not Quorum.OUT else "up, out of quorum"
    lost = f"lost ({silent_s(view, host):.1f} s silent)"
    return f"{lost}: {safe}" if safe else f"{lost}: {_unsafe_reason(view, host)}"


def _recoverable(vm: VmView) -> bool:
    return vm.ha and vm.wants_running and not vm.busy and vm.host is not None


def decide(view: ClusterView) -> Decision:
    """One round: see the module docstring."""
    hosts = {h.name: h for h in view.hosts}
    out = Decision()
    ha_on: dict[str, list[VmView]] = {}
    for vm in view.vms:
        if _recoverable(vm) and vm.host in hosts:
            ha_on.setdefault(str(vm.host), []).append(vm)
    for host in view.hosts:
        safe = safe_because(view, host)
        out.hosts[host.name] = _host_words(view, host, safe)
        if not is_lost(view, host):
            if not host.maintenance and host.fence is not Fence.FENCING and \
                    host.quorum is not Quorum.OUT:
                out.targets.append(host.name)
            continue
        out.lost.append(host.name)
        if safe is not None:
            out.safe[host.name] = safe
        # Only a host with HA VMs to bring back is fenced: powering off a host for nothing
        # would only risk a false alarm's damage.
        if ha_on.get(host.name) and _needs_fencing(view, host):
            out.fence.append(host.name)
    recover = [vm for name in out.safe for vm in ha_on.get(name, [])]
    recover.sort(key=lambda vm: (-vm.priority, vm.name))
    out.recover = [vm.name for vm in recover]
    for name, vms in ha_on.items():
        if name in out.lost and name not in out.safe:
            why = _unsafe_reason(view, hosts[name])
            for vm in vms:
                out.waiting[vm.name] = why
    if out.recover and not out.targets:
        for name in out.recover:
            out.waiting[name] = "no host is up to run it"
    return out
