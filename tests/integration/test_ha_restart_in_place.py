"""Restart in place on the single node (issue 15, "HA restart"): the QEMU of an HA VM killed
with SIGKILL (libvirt: shut off, crashed) runs again on the same host; a VM that is not HA,
killed the same way, stays stopped. --ha is refused for a root disk on the host's own
storage."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from labutil import qemu_pid
from nodeutil import Node, wait_for
from storageutil import traversable

pytestmark = pytest.mark.integration

POOL = "ha-shared"


@pytest.fixture
def shared_pool(node: Node) -> Iterator[str]:
    traversable(node)
    path = node.data_dir.parent / "ha-shared-dir"
    path.mkdir(mode=0o711, exist_ok=True)
    node.cli("storage", "pool", "create", POOL, "--type", "shared", "--path", str(path))
    try:
        yield POOL
    finally:
        for vm in ("ha-a", "ha-plain"):
            node.cli("vm", "delete", vm, "--force", check=False)
        node.cli("storage", "pool", "delete", POOL, check=False)


def _vm(node: Node, name: str) -> dict[str, Any]:
    shown: Any = node.cli_json("vm", "show", name)
    return dict(shown)


def _running(node: Node, name: str) -> int:
    """The QEMU pid of VM ``name`` once it runs."""
    wait_for(f"{name} to run", lambda: qemu_pid(node.host, name) is not None, timeout=60)
    pid = qemu_pid(node.host, name)
    assert pid is not None
    return pid


def test_an_ha_vm_killed_runs_again_in_place_and_a_plain_one_stays_stopped(
        node: Node, shared_pool: str) -> None:
    refused = node.cli("vm", "create", "ha-a", "--image", "tiny", "--ha", check=False)
    assert refused.returncode != 0 and "--pool SHARED_POOL" in " ".join(refused.stderr.split())

    node.cli("vm", "create", "ha-a", "--image", "tiny", "--memory", "128M", "--pool",
             shared_pool, "--ha", "--ha-priority", "10", "--start")
    node.cli("vm", "create", "ha-plain", "--image", "tiny", "--memory", "128M", "--pool",
             shared_pool, "--start")
    shown = _vm(node, "ha-a")
    assert (shown["ha"], shown["ha_priority"], shown["restart_policy"]) == (True, 10, "always")
    ha_pid, plain_pid = _running(node, "ha-a"), _running(node, "ha-plain")

    os.kill(ha_pid, signal.SIGKILL)  # the QEMU processes this test's VMs started
    os.kill(plain_pid, signal.SIGKILL)

    def restarted() -> bool:
        pid = qemu_pid(node.host, "ha-a")
        return pid is not None and pid != ha_pid

    wait_for("ha-a to run again", restarted, timeout=60)
    wait_for("ha-plain to be seen stopped",
             lambda: _vm(node, "ha-plain")["state"] == "stopped", timeout=60)
    ha, plain = _vm(node, "ha-a"), _vm(node, "ha-plain")
    assert (ha["state"], ha["desired_power"], ha["ha_reason"]) == ("running", "running", None)
    assert (plain["desired_power"], qemu_pid(node.host, "ha-plain")) == ("stopped", None)
    assert "crashed" in node.virsh("domstate", "--reason", "ha-plain")
