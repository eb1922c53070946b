"""The network side of a lab host: its namespace and the veth pairs that join it.

Lab host ``index`` uses only 10.209.<index>.0/29:

    machine  crl-<name> 10.209.<index>.1/30  <->  lab0 10.209.<index>.2/30   lab host
    router   crr-<name> 10.209.<index>.5/30  <->  lab1 10.209.<index>.6/30   lab host

The *router* is one more network namespace, ``corral-lab-router``, shared by all lab hosts and
created by the first one up (deleted by the last one down, under a lock): IPv4 forwarding is
on there, so lab hosts reach each other's addresses (10.209.0.0/16 via lab1), as live
migration needs, while the machine's own forwarding stays off. The router has no link to
anything but lab hosts, and a lab host has no route beyond 10.209.0.0/16: nothing they send
can leave towards eth0.

Touches only what it names: those namespaces, ``crl-<name>`` in our namespace and the
interfaces it creates inside the lab and router namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import subprocess
from collections.abc import Iterator

from corral.errors import Conflict, HostError

log = logging.getLogger(__name__)

ROUTER_NETNS = "corral-lab-router"  # no lab host name (1-8 characters) can make this
LAB_NETWORK = ipaddress.IPv4Network("10.209.0.0/16")
ROUTER_LOCK = "/run/lock/corral-lab-router.lock"  # an empty file, left in place


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)
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
    if netns_exists(ROUTER_NETNS):
        block = subnet.supernet(new_prefix=29)  # the machine's /30 and the router's /30
        out = ip("-j", "-4", "-n", ROUTER_NETNS, "route", "show").stdout
        for route in json.loads(out or "[]"):
            dst = route.get("dst", "")
            if dst not in ("", "default") and ipaddress.IPv4Network(dst, strict=False).overlaps(block):
                raise Conflict(f"the lab router already routes {dst}: pick another index")


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


@contextlib.contextmanager
def _router_lock() -> Iterator[None]:
    """Serialises creating, joining, leaving and deleting the router, across processes."""
    # Not a flock on /run/netns itself: `ip netns add` takes that one.
    os.makedirs(os.path.dirname(ROUTER_LOCK), exist_ok=True)
    fd = os.open(ROUTER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def connect_router(netns: str, name: str, subnet: ipaddress.IPv4Network) -> None:
    """Join lab host ``netns`` to the router (made here if it is missing)."""
    base = subnet.network_address
    router_ip, host_ip = str(base + 5), str(base + 6)
    rlink = f"crr-{name}"
    with _router_lock():
        if not netns_exists(ROUTER_NETNS):
            ip("netns", "add", ROUTER_NETNS)
            ip("-n", ROUTER_NETNS, "link", "set", "dev", "lo", "up")
            subprocess.run(
                ["ip", "netns", "exec", ROUTER_NETNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                capture_output=True,
                timeout=30,
                check=True,
            )
        ip("-n", netns, "link", "add", "lab1", "type", "veth",
           "peer", "name", rlink, "netns", ROUTER_NETNS)  # fmt: skip
        ip("-n", netns, "addr", "add", f"{host_ip}/30", "dev", "lab1")
        ip("-n", netns, "link", "set", "dev", "lab1", "up")
        ip("-n", ROUTER_NETNS, "addr", "add", f"{router_ip}/30", "dev", rlink)
        ip("-n", ROUTER_NETNS, "link", "set", "dev", rlink, "up")
        ip("-n", ROUTER_NETNS, "route", "replace", str(subnet), "via", host_ip)
    ip("-n", netns, "route", "add", str(LAB_NETWORK), "via", router_ip)


def disconnect_router(name: str) -> None:
    """Remove lab host ``name``'s link to the router, and the router if it was the last."""
    rlink = f"crr-{name}"
    try:
        with _router_lock():
            if not netns_exists(ROUTER_NETNS):
                return
            if ip("-n", ROUTER_NETNS, "link", "show", "dev", rlink, check=False).returncode == 0:
                ip("-n", ROUTER_NETNS, "link", "del", "dev", rlink)
            links = json.loads(ip("-j", "-n", ROUTER_NETNS, "link", "show").stdout or "[]")
            if all(link.get("ifname") == "lo" for link in links):
                ip("netns", "del", ROUTER_NETNS)
    except Exception:
        log.warning("leaving the lab router failed for %s", name, exc_info=True)
