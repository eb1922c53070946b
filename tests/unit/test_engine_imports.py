"""The engine talks to agents over HTTP only: it loads no agent module (``corral.agent.*``:
libvirt, nftables, dnsmasq, the host's network code). What both sides share is the protocol,
``corral.agent_api`` (pure models and checks)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import corral.engine.app
print(json.dumps(sorted(m for m in sys.modules if m == "corral.agent" or m.startswith("corral.agent."))))
"""


def test_engine_app_loads_no_agent_module() -> None:
    # A fresh interpreter: this test process has the agent's modules loaded by other tests.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out) == []
