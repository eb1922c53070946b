"""What a corral NAT network is (``NetworkSpec``), a DHCP lease, and the pure checks.

Every value of a spec reaches an interface name, a file path, a dnsmasq config line or an
nftables ruleset, so ``validate_spec`` is strict and runs before anything touches the host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from corral.errors import InvalidInput
from corral.validation import validate_name

BRIDGE_MAX = 15  # IFNAMSIZ - 1
_BRIDGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Characters allowed in the state directory: it is written into dnsmasq's config file.
_SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9_./+@:,=-]*")


@dataclass(frozen=True)
class NetworkSpec:
    name: str  # corral network name, [A-Za-z0-9_-], <= 63
    bridge: str  # Linux bridge name, <= 15 chars, [A-Za-z0-9_.-]
    subnet: str  # CIDR, e.g. "10.210.0.0/24"
    gateway: str  # e.g. "10.210.0.1"
    dhcp_start: str
    dhcp_end: str
    nat: bool = True
    dns_domain: str | None = None  # e.g. "corral": VM names resolve as NAME.corral


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str | None
    expires: int  # seconds since the epoch; 0 for an infinite lease


def validate_bridge_name(value: object, field: str = "bridge") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field} must be a non-empty string", field=field)
    if len(value) > BRIDGE_MAX:
        raise InvalidInput(
            f"{field} {value!r} is longer than {BRIDGE_MAX} characters (a Linux interface "
            "name limit)",
            field=field,
        )
    if not _BRIDGE_RE.fullmatch(value):
        raise InvalidInput(
            f"{field} {value!r} may hold only ASCII letters, digits, '_', '.' and '-', "
            "and must start with a letter or digit",
            field=field,
        )
    return value


def parse_subnet(value: object, field: str = "subnet") -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a CIDR string like 10.210.0.0/24", field=field)
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidInput(
            f"{field} {value!r} is not a CIDR like 10.210.0.0/24", field=field
        ) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidInput(f"{field} {value!r}: only IPv4 subnets are supported", field=field)
    if "/" not in value:
        raise InvalidInput(f"{field} {value!r} needs a prefix length, e.g. /24", field=field)
    if str(net) != value:
        raise InvalidInput(
            f"{field} {value!r} has host bits set; did you mean {net}?", field=field
        )
    if net.prefixlen < 8 or net.prefixlen > 30:
        raise InvalidInput(
            f"{field} {value!r}: the prefix length must be between /8 and /30", field=field
        )
    if (
        net.is_loopback
        or net.is_multicast
        or net.is_link_local
        or net.is_unspecified
        or net.is_reserved
        or net.overlaps(ipaddress.IPv4Network("0.0.0.0/8"))
    ):
        raise InvalidInput(
            f"{field} {value!r} is a special-purpose range (loopback, link-local, "
            "multicast or reserved)",
            field=field,
        )
    return net


def _host_in(net: ipaddress.IPv4Network, value: object, field: str) -> ipaddress.IPv4Address:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be an IPv4 address string", field=field)
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidInput(f"{field} {value!r} is not an IPv4 address", field=field) from None
    if addr not in net:
        raise InvalidInput(f"{field} {value} is outside the subnet {net}", field=field)
    if addr in (net.network_address, net.broadcast_address):
        raise InvalidInput(
            f"{field} {value} is the network or broadcast address of {net}", field=field
        )
    return addr


def validate_network_name(value: object, field: str = "name") -> str:
    """``corral.validation.validate_name``, plus a full match (its ``$`` lets a trailing
    newline through, which must never reach a config file or a path)."""
    name = validate_name(value, field)
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"{field} {name!r} may hold only ASCII letters, digits, '-' and '_'", field=field
        )
    return name


def validate_dns_domain(value: object, field: str = "dns_domain") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field} must be a non-empty string", field=field)
    if len(value) > 253 or not all(_LABEL_RE.fullmatch(label) for label in value.split(".")):
        raise InvalidInput(
            f"{field} {value!r} must be a DNS name of lower-case labels (a-z, 0-9, '-'), "
            "e.g. 'corral' or 'lab.example'",
            field=field,
        )
    return value


def validate_spec(spec: NetworkSpec) -> None:
    """Raise ``InvalidInput`` (with ``field``) unless every value of ``spec`` is sound."""
    validate_network_name(spec.name, "name")
    validate_bridge_name(spec.bridge)
    net = parse_subnet(spec.subnet)
    gateway = _host_in(net, spec.gateway, "gateway")
    start = _host_in(net, spec.dhcp_start, "dhcp_start")
    end = _host_in(net, spec.dhcp_end, "dhcp_end")
    if start > end:
        raise InvalidInput(
            f"dhcp_start {start} is after dhcp_end {end}", field="dhcp_start"
        )
    if start <= gateway <= end:
        raise InvalidInput(
            f"the gateway {gateway} lies inside the DHCP range {start}-{end}", field="gateway"
        )
    if not isinstance(spec.nat, bool):
        raise InvalidInput("nat must be true or false", field="nat")
    if spec.dns_domain is not None:
        validate_dns_domain(spec.dns_domain)


def network_dir(spec: NetworkSpec, state_dir: Path) -> Path:
    """``<state_dir>/<name>``, absolute (dnsmasq runs from /) and safe to write into a config."""
    base = Path(state_dir).absolute()
    text = str(base)
    if not _SAFE_PATH_RE.fullmatch(text) or "/../" in text + "/":
        raise InvalidInput(
            f"state_dir {text!r} may hold only ASCII letters, digits and _./+@:,=-",
            field="state_dir",
        )
    return base / validate_network_name(spec.name, "name")
