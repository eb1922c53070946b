"""MAC/IP anti-spoofing of ports on Open vSwitch bridges, as OpenFlow flows.

OVS here runs the userspace datapath: ovs-vswitchd reads a guest's tap through AF_PACKET
before any netfilter hook, so nftables cannot filter it. A port (corral.agent.network.
firewall.Port) whose network is an OVS network gets flows on the bridge its tap is on
instead, all with one cookie derived from its MAC (:func:`cookie`, ``0xc000`` + the MAC's
48 bits), so that ``ovs-ofctl del-flows BR cookie=C/-1`` removes exactly its flows::

    priority 100  in_port=TAP,dl_src=MAC,ip,nw_src=IP          NORMAL   each address
    priority 100  in_port=TAP,dl_src=MAC,arp,arp_sha=MAC,arp_spa=IP NORMAL each, and 0.0.0.0
    priority 100  in_port=TAP,dl_src=MAC,udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67  (DHCP)
    priority 100  in_port=TAP,dl_src=MAC,ipv6,ipv6_src=fe80::/10 (and ::)  link-local only
    priority  90  in_port=TAP                                  drop

A port without IP checks (``ip_guard`` False: no local DHCP server) gets MAC-only flows
(ip, arp with its MAC as sender, any ipv6, from its MAC). The bridge's own priority-0 NORMAL
flow carries everything else. This matches the nftables rules of Linux-bridge ports
(firewall.render).

``in_port`` needs the tap to be on the bridge (libvirt plugs it when the domain starts or
the NIC is hot-plugged), and OVS keeps flows when a port goes (they then name a dead
OpenFlow port number that a later port may get): :func:`sync` installs the flows of every
port whose tap is there and deletes every corral cookie whose port is gone; the agent runs
it after a domain start, a NIC hot-plug, a snapshot revert and at its own start. One port's
flows are replaced in one ``ovs-ofctl --bundle add-flows`` transaction (delete by cookie,
then add). dnsmasq's ``--dhcp-script`` adds and removes the ip/arp flows of leased addresses
(firewall.dhcp_script); it and the agent serialize on a lock file (:func:`lock`).
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from corral.agent.network import _cmd, ovs
from corral.errors import CorralError, HostError

if TYPE_CHECKING:
    from corral.agent.network.firewall import Port

log = logging.getLogger(__name__)

COOKIE_PREFIX = 0xC000  # top 16 bits of every corral port cookie; the MAC below it
COOKIE_MASK = 0xFFFF << 48
ALLOW, DROP = 100, 90
_COOKIE_RE = re.compile(r"cookie=(0x[0-9a-f]+)")
LOCK_NAME = "corral-flows.lock"


def cookie(mac: str) -> int:
    """The cookie of the port with ``mac``: ``0xc000`` then the 48 bits of the MAC."""
    return COOKIE_PREFIX << 48 | int(mac.replace(":", ""), 16)


def cookie_text(mac: str) -> str:
    return f"{cookie(mac):#018x}"


def address_flows(port: Port, ip: str) -> list[str]:
    """The two flows that let ``port`` send from ``ip`` (IPv4 and ARP)."""
    head = f"cookie={cookie_text(port.mac)},priority={ALLOW},in_port={port.tap},dl_src={port.mac}"
    return [f"{head},ip,nw_src={ip},actions=NORMAL",
            f"{head},arp,arp_sha={port.mac},arp_spa={ip},actions=NORMAL"]


def render(port: Port, addresses: Iterable[str]) -> list[str]:
    """The flows of ``port`` (``ovs-ofctl`` flow syntax, cookie included), given its IPv4
    addresses (static and leased)."""
    head = f"cookie={cookie_text(port.mac)},priority={ALLOW},in_port={port.tap},dl_src={port.mac}"
    if not port.ip_guard:
        flows = [f"{head},ip,actions=NORMAL",
                 f"{head},arp,arp_sha={port.mac},actions=NORMAL",
                 f"{head},ipv6,actions=NORMAL"]
    else:
        flows = []
        for ip in sorted(set(addresses), key=ipaddress.IPv4Address):
            flows += address_flows(port, ip)
        flows += [f"{head},arp,arp_sha={port.mac},arp_spa=0.0.0.0,actions=NORMAL",
                  f"{head},udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67,actions=NORMAL",
                  f"{head},ipv6,ipv6_src=fe80::/10,actions=NORMAL",
                  f"{head},ipv6,ipv6_src=::,actions=NORMAL"]
    flows.append(f"cookie={cookie_text(port.mac)},priority={DROP},in_port={port.tap},"
                 "actions=drop")
    return flows


def replace_script(port: Port, addresses: Iterable[str]) -> str:
    """``ovs-ofctl add-flows`` input that replaces the port's flows (one bundle)."""
    lines = [f"delete cookie={cookie_text(port.mac)}/-1"]
    lines += [f"add {flow}" for flow in render(port, addresses)]
    return "\n".join(lines) + "\n"


# -- applying --------------------------------------------------------------------------------

@contextmanager
def lock(paths: ovs.OvsPaths) -> Iterator[None]:
    """The lock the agent and dnsmasq's script take around changes of a port's flows (so
    that a lease learned while the agent replaces the flows is not lost)."""
    paths.rundir.mkdir(parents=True, exist_ok=True)
    with open(paths.rundir / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ofctl(paths: ovs.OvsPaths, *args: str, input: str | None = None) -> str:
    return _cmd.run(["ovs-ofctl", *args], input=input, env=paths.env()).stdout


def install(paths: ovs.OvsPaths, bridge: str, port: Port, addresses: Iterable[str]) -> None:
    """Replace the port's flows on ``bridge`` atomically (an OpenFlow 1.4 bundle; bridges
    that do not speak 1.4 get the same lines without one)."""
    script = replace_script(port, addresses)
    try:
        _ofctl(paths, "--bundle", "add-flows", bridge, "-", input=script)
    except HostError:
        _ofctl(paths, "add-flows", bridge, "-", input=script)


def cookies(paths: ovs.OvsPaths, bridge: str) -> set[int]:
    """The corral port cookies that have flows on ``bridge``."""
    out = _ofctl(paths, "dump-flows", bridge,
                 f"cookie={COOKIE_PREFIX << 48:#x}/{COOKIE_MASK:#x}")
    return {int(c, 16) for c in _COOKIE_RE.findall(out)}


def delete(paths: ovs.OvsPaths, bridge: str, value: int) -> None:
    _ofctl(paths, "del-flows", bridge, f"cookie={value:#x}/-1")


def _usable(paths: ovs.OvsPaths) -> bool:
    try:
        return ovs.running(paths)
    except CorralError as exc:
        log.warning("Open vSwitch flows not synced: %s", exc)
        return False


def sync(ports: list[Port], addresses: Callable[[], dict[str, set[str]]],
         paths: ovs.OvsPaths | None = None) -> list[str]:
    """Install the flows of each of ``ports`` whose tap is on an OVS bridge, and delete the
    flows of corral cookies on every bridge that belong to none of them. ``addresses`` (tap
    -> IPv4 addresses) is called under :func:`lock`. Returns the taps whose flows were
    installed. Nothing happens where Open vSwitch does not run."""
    paths = paths or ovs.OvsPaths.from_env()
    if not _usable(paths):
        return []
    by_tap = {p.tap: p for p in ports}
    done = []
    with lock(paths):
        known = addresses() if ports else {}
        for bridge in ovs.vsctl(paths, "list-br").split():
            keep = set()
            for name in ovs.list_ports(paths, bridge):
                port = by_tap.get(name)
                if port is None:
                    continue
                install(paths, bridge, port, known.get(port.tap, set()))
                keep.add(cookie(port.mac))
                done.append(port.tap)
            for stale in cookies(paths, bridge) - keep:
                delete(paths, bridge, stale)
    return done


def remove(mac: str, paths: ovs.OvsPaths | None = None) -> None:
    """Delete the flows of the port with ``mac`` from every bridge (its tap may be gone)."""
    paths = paths or ovs.OvsPaths.from_env()
    if not _usable(paths):
        return
    for bridge in ovs.vsctl(paths, "list-br").split():
        delete(paths, bridge, cookie(mac))
