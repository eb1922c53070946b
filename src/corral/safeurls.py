"""Which addresses an image import may fetch a URL from (no SSRF into the host).

By default a URL whose host is, or resolves to, a loopback, link-local (169.254.0.0/16,
fe80::/10: cloud metadata services), unspecified, multicast or broadcast address, an
address of this host, or an address the caller adds (the engine: its agents' addresses)
is refused before any connection, with one message whatever the address is
(:data:`REFUSED`): the answer never tells what listens there. Every address a name
resolves to is checked, and the agent then connects to the checked address itself
(corral.agent.download: no second lookup, no DNS rebinding); each redirect is checked
again. ``import_allow_cidrs`` (``corral up --import-allow-cidr``) permits chosen ranges,
e.g. a mirror on this host, or 127.0.0.0/8 for the test file server.

Pure (sockets and ipaddress): the engine and the agent both use it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from corral.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED = ("source URL points to a loopback/link-local/host address; not allowed "
           "(set import_allow_cidrs to permit)")
_ALWAYS_REFUSED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "255.255.255.255/32", "fec0::/10"))  # "this network", broadcast, site-local


def parse_cidrs(cidrs: Iterable[str], field_name: str = "import_allow_cidrs"
                ) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses) as networks; InvalidInput naming the setting if one is bad."""
    out: list[IPNetwork] = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            raise InvalidInput(f"{field_name}: {c!r} is not a CIDR such as 10.0.0.0/8",
                               field=field_name) from None
    return tuple(out)


def host_addresses() -> frozenset[IPAddress]:
    """This host's own addresses (of its network namespace): the kernel's LOCAL routes
    (/proc/net/fib_trie) and IPv6 interface addresses (/proc/net/if_inet6)."""
    found: set[IPAddress] = set()
    with contextlib.suppress(OSError, ValueError, IndexError):
        last = ""
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            s = line.strip()
            if s.startswith("|--"):
                last = s[3:].strip()
            elif s.startswith("/32 host LOCAL") and last:
                found.add(ipaddress.ip_address(last))
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
    return frozenset(found)


def _plain(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


@dataclass(frozen=True)
class UrlPolicy:
    allow: tuple[IPNetwork, ...] = ()  # permitted even when refused otherwise
    deny: tuple[IPNetwork, ...] = ()  # refused as well (the management network)
    own_addresses: Callable[[], frozenset[IPAddress]] = field(default=host_addresses,
                                                              compare=False)

    @classmethod
    def build(cls, allow_cidrs: Iterable[str] = (), deny_cidrs: Iterable[str] = ()
              ) -> UrlPolicy:
        return cls(allow=parse_cidrs(allow_cidrs), deny=parse_cidrs(deny_cidrs, "deny"))

    def refused(self, address: str | IPAddress) -> bool:
        ip = _plain(ipaddress.ip_address(str(address).split("%", 1)[0]))
        if any(ip in net for net in self.allow if net.version == ip.version):
            return False
        if (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast
                or any(ip in n for n in (*_ALWAYS_REFUSED, *self.deny) if n.version == ip.version)):
            return True
        return ip in self.own_addresses()

    def addresses(self, host: str, port: int | None) -> list[str]:
        """Every address ``host`` resolves to, once, all checked (InvalidInput
        :data:`REFUSED` if any is refused); [] when it does not resolve."""
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, ValueError):
            return []
        found: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            addr = str(sockaddr[0])
            if addr not in found:
                found.append(addr)
        if any(self.refused(a) for a in found):
            raise InvalidInput(REFUSED, field="source")
        return found

    def check_url(self, url: str) -> list[str]:
        """Check an http(s) URL's host before anything connects; its checked addresses."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput("source must be an http(s) URL with a host", field="source")
        try:
            port = parts.port
        except ValueError:
            raise InvalidInput("source URL has a bad port", field="source") from None
        return self.addresses(parts.hostname, port or (443 if parts.scheme == "https" else 80))
