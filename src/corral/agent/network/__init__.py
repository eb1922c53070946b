"""Agent side of corral's networks: a Linux bridge, one dnsmasq and nftables NAT per network.

Everything acts on the network namespace of the calling process (tests run it inside a
namespace of their own). Public API::

    NetworkSpec, Lease, validate_spec, check_route_overlap,
    ensure_network, delete_network, network_status, leases

Errors (``corral.errors``): ``InvalidInput`` for a bad spec (with ``field``), ``Conflict`` for
a subnet overlapping a host route or an interface name taken by a non-bridge, ``Unavailable``
when ip/nft/dnsmasq is missing, ``HostError`` when one of them fails.
"""

from corral.agent.network.manager import delete_network, ensure_network, leases, network_status
from corral.agent.network.routes import check_route_overlap
from corral.agent.network.spec import Lease, NetworkSpec, validate_spec

__all__ = [
    "Lease",
    "NetworkSpec",
    "check_route_overlap",
    "delete_network",
    "ensure_network",
    "leases",
    "network_status",
    "validate_spec",
]
