"""The network spec (``corral.agent_api.networks``, shared with the engine: re-exported here
for the agent's network modules) and where a network's state lives on a host."""

from __future__ import annotations

import re
from pathlib import Path

from corral.agent_api.networks import (
    BACKENDS,
    BRIDGE_MAX,
    MAX_PEERS,
    MODES,
    VLAN_MAX,
    VLAN_MIN,
    VNI_MAX,
    VNI_MIN,
    VXLAN_MTU,
    VXLAN_PORT,
    Lease,
    NetworkBody,
    NetworkSpec,
    parse_subnet,
    validate_bridge_name,
    validate_dns_domain,
    validate_network_name,
    validate_spec,
)
from corral.errors import InvalidInput

__all__ = ["BACKENDS", "BRIDGE_MAX", "MAX_PEERS", "MODES", "VLAN_MAX", "VLAN_MIN", "VNI_MAX",
           "VNI_MIN", "VXLAN_MTU", "VXLAN_PORT", "Lease", "NetworkBody", "NetworkSpec",
           "network_dir", "parse_subnet", "validate_bridge_name", "validate_dns_domain",
           "validate_network_name", "validate_spec"]

# Characters allowed in the state directory: it is written into dnsmasq's config file.
_SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9_./+@:,=-]*")


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
