"""The network side of a lab host: its namespace and the veth pair that joins it to us.

Touches only what it names: the namespace ``netns``, the interface ``veth`` (in our
namespace) and its peer (created directly inside ``netns``), and the /30 of the lab host.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess

from corral.errors import Conflict, HostError

log = logging.getLogger(__name__)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=30, check=check
        )
    except subprocess.CalledProcessError as exc:
        raise HostError(f"ip {' '.join(args)} failed: {exc.stderr.strip()}", argv=exc.cmd) from exc


def netns_exists(netns: str) -> bool:
    # `ip netns list` prints "NAME" or "NAME (id: N)" per line.
    names = [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]
    return netns in names


def link_exists(ifname: str) -> bool:
    return ip("link", "show", "dev", ifname, check=False).returncode == 0


def netns_pids(netns: str) -> list[int]:
    result = ip("netns", "pids", netns, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def check_free(netns: str, veth: str, subnet: ipaddress.IPv4Network) -> None:
    """Conflict unless the namespace, the interface and the subnet are all unused here."""
    if netns_exists(netns):
        raise Conflict(
            f"network namespace {netns} exists: the lab host is running or was left behind "
            "(stop() removes it)"
        )
    if link_exists(veth):
        raise Conflict(f"interface {veth} exists (stop() removes it)")
    routes = json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("type") in ("local", "broadcast"):
            continue
        try:
            net = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if net.overlaps(subnet):
            raise Conflict(
                f"lab subnet {subnet} overlaps the route {dst} dev {route.get('dev', '?')}: "
                "pick another index"
            )


def create(
    netns: str, veth: str, inner: str, subnet: ipaddress.IPv4Network, gateway: str, address: str
) -> None:
    """Namespace + veth: ``gateway`` on ``veth`` here, ``address`` on ``inner`` inside."""
    plen = str(subnet.prefixlen)
    ip("netns", "add", netns)
    ip("link", "add", veth, "type", "veth", "peer", "name", inner, "netns", netns)
    ip("addr", "add", f"{gateway}/{plen}", "dev", veth)
    ip("link", "set", "dev", veth, "up")
    ip("-n", netns, "link", "set", "dev", "lo", "up")
    ip("-n", netns, "addr", "add", f"{address}/{plen}", "dev", inner)
    ip("-n", netns, "link", "set", "dev", inner, "up")


def delete(netns: str, veth: str) -> None:
    """Remove the veth pair and the namespace where they exist; logs, never raises."""
    try:
        if link_exists(veth):
            ip("link", "del", "dev", veth)
    except Exception:
        log.warning("deleting interface %s failed", veth, exc_info=True)
    try:
        if netns_exists(netns):
            ip("netns", "del", netns)
    except Exception:
        log.warning("deleting network namespace %s failed", netns, exc_info=True)
