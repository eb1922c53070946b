"""Where a network's state lives on a host (the spec itself: corral.agent_api.networks)."""

from __future__ import annotations

import re
from pathlib import Path

from corral.agent_api.networks import NetworkSpec, validate_network_name
from corral.errors import InvalidInput

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
