"""Networks: what a corral network is on a host (``NetworkSpec``), its pure checks, and the
protocol of ``/v1/networks``: build (``PUT``), remove, status, dry run (``check``), DHCP
leases and static leases (``reservations``).

The engine builds a spec from its row to validate a request and to know where a NIC plugs
in; the agent builds the host's devices from it (corral.agent.network). Every value of a
spec reaches an interface name, a file path, a dnsmasq config line or an nftables ruleset,
so ``validate_spec`` is strict and runs before anything touches the host.

Modes: ``nat`` (bridge + dnsmasq + masquerade), ``routed`` (bridge + dnsmasq, forwarded
without masquerade), ``isolated`` (bridge + dnsmasq, nothing forwarded off the bridge) and
``bridge`` (guests join an existing host bridge; corral builds no address, no dnsmasq, no
rules). Backends: ``linuxbridge`` and ``ovs`` (Open vSwitch).

How a network maps onto devices (``NetworkSpec``'s properties), e.g. for the network
``web`` whose name hashes to ``1a2b3c4d``::

    untagged, linuxbridge   BRIDGE holds the gateway; guests plug into BRIDGE
    untagged, ovs           OVS bridge BRIDGE, its local port holds the gateway
    VLAN V, linuxbridge     BRIDGE is a VLAN-filtering trunk shared by the VLAN networks;
                            access bridge crb1a2b3c4d holds the gateway and the guests, joined
                            to the trunk by the veth pair crv1a2b3c4d / crt1a2b3c4d (pvid V)
    VLAN V, ovs             OVS bridge BRIDGE shared by the VLAN networks; internal port
                            crg1a2b3c4d (tag V) holds the gateway; guest ports get tag V
    overlay (VNI N)         VXLAN device crxN on the network's own segment (access side),
                            one forwarding entry per remote host (``peers``); one host
                            serves the gateway, DHCP and DNS, the others (``serve=False``)
                            only carry the segment
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from pydantic import ConfigDict

from corral.agent_api import Answer, Body
from corral.errors import InvalidInput
from corral.validation import validate_name

BRIDGE_MAX = 15  # IFNAMSIZ - 1
_BRIDGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# The names of corral's own devices (see the layout above): never a network's bridge.
_INTERNAL_RE = re.compile(r"cr[bvtg][0-9a-f]{8}|crx[0-9]+")

MODES = ("nat", "routed", "isolated", "bridge")
BACKENDS = ("linuxbridge", "ovs")
VLAN_MIN, VLAN_MAX = 1, 4094
VNI_MIN, VNI_MAX = 1, (1 << 24) - 1
VXLAN_PORT = 4789
VXLAN_MTU = 1450  # a 1500-byte underlay less the 50 bytes of VXLAN over IPv4
MAX_PEERS = 256


class NetworkBody(Body):
    """``PUT``/``POST .../check`` of ``/v1/networks/{name}``: a network as a host builds it,
    the name being the path's. Also what the agent keeps on disk to rebuild it at start.

    Types only: the values are checked by ``validate_spec`` (errors that name the field),
    mode and backend included, so an agent refuses a bad one with the same words as the
    engine."""

    model_config = ConfigDict(frozen=True)
    bridge: str  # Linux or OVS bridge name, <= 15 chars, [A-Za-z0-9_.-]
    subnet: str | None = None  # CIDR, e.g. "10.210.0.0/24"; None only in bridge mode
    gateway: str | None = None  # e.g. "10.210.0.1"
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    nat: bool = True  # used only when ``mode`` is None: nat (True) or routed (False)
    dns_domain: str | None = None  # e.g. "corral": VM names resolve as NAME.corral
    mode: str | None = None  # nat | routed | isolated | bridge
    backend: str = "linuxbridge"  # linuxbridge | ovs
    vlan: int | None = None  # 802.1Q tag, 1-4094
    vni: int | None = None  # VXLAN overlay: network identifier, 1-16777215
    local: str | None = None  # VXLAN: this host's underlay address (None: by route)
    peers: tuple[str, ...] = ()  # VXLAN: the other hosts' underlay addresses
    # This host holds the gateway, DHCP and DNS. An overlay network is served by one host;
    # the others only carry its L2 segment (serve=False: no address, dnsmasq or rules).
    serve: bool = True


class NetworkSpec(NetworkBody):
    """A network on one host: its body and its name, and how it maps onto devices."""

    name: str  # corral network name, [A-Za-z0-9_-], <= 63

    @classmethod
    def of(cls, name: str, body: NetworkBody) -> NetworkSpec:
        return cls(name=name, **body.model_dump())

    def body(self) -> NetworkBody:
        """What ``PUT /v1/networks/{name}`` sends: the spec less its name."""
        return NetworkBody(**self.model_dump(exclude={"name"}))

    @property
    def kind(self) -> str:
        """The effective mode."""
        return self.mode or ("nat" if self.nat else "routed")

    @property
    def managed(self) -> bool:
        """corral gives the network an address, dnsmasq and rules (every mode but bridge)."""
        return self.kind != "bridge"

    @property
    def serves(self) -> bool:
        """This host gives the network its gateway address, dnsmasq and rules."""
        return self.managed and self.serve

    @property
    def tag(self) -> str:
        """8 hex digits derived from the name: the suffix of the network's own devices."""
        return hashlib.sha256(f"corral-network:{self.name}".encode()).hexdigest()[:8]

    @property
    def access_bridge(self) -> str:
        """linuxbridge + VLAN: the network's own bridge (gateway, guests)."""
        return f"crb{self.tag}"

    @property
    def veth_pair(self) -> tuple[str, str]:
        """linuxbridge + VLAN: (end on the access bridge, end on the trunk with pvid VLAN)."""
        return f"crv{self.tag}", f"crt{self.tag}"

    @property
    def gateway_port(self) -> str:
        """ovs + VLAN: the internal port (tag VLAN) that holds the gateway."""
        return f"crg{self.tag}"

    @property
    def l3_device(self) -> str | None:
        """Where the gateway address lives and dnsmasq listens; None in bridge mode."""
        if not self.managed:
            return None
        if self.vlan is None:
            return self.bridge
        return self.access_bridge if self.backend == "linuxbridge" else self.gateway_port

    @property
    def port_bridge(self) -> str:
        """The bridge a guest NIC plugs into."""
        if self.backend == "linuxbridge" and self.vlan is not None:
            return self.access_bridge
        return self.bridge

    @property
    def port_vlan(self) -> int | None:
        """The VLAN tag of a guest port (Open vSwitch tags ports; Linux uses the trunk)."""
        return self.vlan if self.backend == "ovs" else None

    @property
    def vxlan_device(self) -> str | None:
        return None if self.vni is None else f"crx{self.vni}"

    @property
    def mtu(self) -> int | None:
        """The guests' MTU when it must be below 1500 (overlay networks)."""
        return VXLAN_MTU if self.vni is not None else None


class NetworkStatus(Answer):
    """``PUT``/``GET /v1/networks/{name}``: what of the network is in place. ``bridge``
    always; the others only where they apply (None: not part of this network's layout)."""

    bridge: bool
    dnsmasq: bool | None = None
    nat: bool | None = None  # masquerade
    isolation: bool | None = None
    vlan: bool | None = None  # the VLAN link or gateway port
    overlay: bool | None = None  # VXLAN with exactly the peers


class Lease(Answer):
    """``GET /v1/networks/{name}/leases``: one of dnsmasq's DHCP leases."""

    mac: str
    ip: str
    hostname: str | None = None
    expires: int  # seconds since the epoch; 0 for an infinite lease


class ReservationEntry(Body):
    """A static lease: dnsmasq gives ``ip`` to ``mac`` (``name``: its DHCP host name)."""

    mac: str
    ip: str
    name: str


class ReservationsBody(Body):
    """``PUT /v1/networks/{name}/reservations``: every static lease of the network (the whole
    set: the call replaces the host's)."""

    reservations: list[ReservationEntry]


class ReservationsSet(Answer):
    changed: bool  # False: the host had exactly these already


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


def _int_in(value: object, low: int, high: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be an integer from {low} to {high}", field=field)
    return value


def _ipv4(value: object, field: str) -> ipaddress.IPv4Address:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be an IPv4 address string", field=field)
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidInput(f"{field} {value!r} is not an IPv4 address", field=field) from None


def _validate_layout(spec: NetworkSpec) -> None:
    """Mode, backend, VLAN and overlay values, and how they combine."""
    if spec.mode is not None and spec.mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}", field="mode")
    if spec.backend not in BACKENDS:
        raise InvalidInput(f"backend must be one of {', '.join(BACKENDS)}", field="backend")
    if spec.vlan is not None:
        _int_in(spec.vlan, VLAN_MIN, VLAN_MAX, "vlan")
    if spec.vni is not None:
        _int_in(spec.vni, VNI_MIN, VNI_MAX, "vni")
        if not spec.managed:
            raise InvalidInput(
                "an overlay needs a network corral builds (mode nat, routed or isolated), "
                "not bridge mode", field="vni")
    if spec.local is not None:
        _ipv4(spec.local, "local")
    if not isinstance(spec.peers, (list, tuple)) or len(spec.peers) > MAX_PEERS:
        raise InvalidInput(f"peers must be a list of at most {MAX_PEERS} IPv4 addresses",
                           field="peers")
    if not isinstance(spec.serve, bool):
        raise InvalidInput("serve must be true or false", field="serve")
    if not spec.serve and spec.vni is None:
        raise InvalidInput("only an overlay network is served by another host", field="serve")
    if spec.peers and spec.vni is None:
        raise InvalidInput("peers are VXLAN endpoints: they need a vni", field="peers")
    seen: set[ipaddress.IPv4Address] = set()
    for peer in spec.peers:
        addr = _ipv4(peer, "peers")
        if addr in seen or (spec.local is not None and str(addr) == spec.local):
            raise InvalidInput(f"peers: {peer} is listed twice or is this host", field="peers")
        if addr.is_loopback or addr.is_multicast or addr.is_unspecified:
            raise InvalidInput(f"peers: {peer} is not a unicast host address", field="peers")
        seen.add(addr)


def validate_spec(spec: NetworkSpec) -> None:
    """Raise ``InvalidInput`` (with ``field``) unless every value of ``spec`` is sound."""
    validate_network_name(spec.name, "name")
    validate_bridge_name(spec.bridge)
    if _INTERNAL_RE.fullmatch(spec.bridge):
        raise InvalidInput(f"bridge {spec.bridge!r} has the name of one of corral's own "
                           "devices (crb/crv/crt/crg + 8 hex digits, crx + digits)",
                           field="bridge")
    _validate_layout(spec)
    if not spec.managed:
        for field in ("subnet", "gateway", "dhcp_start", "dhcp_end", "dns_domain"):
            if getattr(spec, field) is not None:
                raise InvalidInput(
                    f"{field}: a bridge-mode network joins an existing bridge; corral gives "
                    "it no address, DHCP or DNS (use mode nat, routed or isolated for that)",
                    field=field,
                )
        return
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
