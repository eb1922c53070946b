"""Agent side of corral's networks: a Linux or Open vSwitch bridge, VLANs, a VXLAN overlay,
one dnsmasq and nftables rules per network (modes nat, routed, isolated, bridge; see spec).

Everything acts on the network namespace of the calling process (tests run it inside a
namespace of their own). Public API::

    NetworkSpec, Lease, validate_spec, check_route_overlap, check_network,
    ensure_network, delete_network, network_status, leases, restored

Errors (``corral.errors``): ``InvalidInput`` for a bad spec (with ``field``), ``Conflict`` for
a subnet overlapping a host route, an interface name taken by a non-bridge or a bridge of
another corral node on this machine (``owner``; details name it), ``NotFound``
for a bridge-mode network whose bridge is missing, ``Unavailable`` when ip/nft/dnsmasq/OVS is
missing (or the kernel lacks a feature), ``HostError`` when one of them fails.
"""

from corral.agent.network.manager import (
    check_network,
    delete_network,
    ensure_network,
    leases,
    network_status,
    restored,
)
from corral.agent.network.routes import check_route_overlap
from corral.agent_api.networks import Lease, NetworkSpec, validate_spec

__all__ = [
    "Lease",
    "NetworkSpec",
    "check_network",
    "check_route_overlap",
    "delete_network",
    "ensure_network",
    "leases",
    "network_status",
    "restored",
    "validate_spec",
]
