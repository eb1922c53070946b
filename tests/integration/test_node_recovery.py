"""Crashes: the engine killed mid-operation, the agent killed under running VMs."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from nodeutil import Node, wait_for

pytestmark = pytest.mark.integration


def _vm_pid(node: Node, name: str) -> int:
    out = node.host.run(["cat", f"/run/libvirt/qemu/{name}.pid"], check=False).stdout.strip()
    return int(out)


def test_engine_kill9_mid_operation_resumes(node: Node, tmp_path: Any) -> None:
    # A guest with no OS never answers the ACPI button, so `stop --timeout 8` keeps its
    # operation running for 8 s: the engine is killed in the middle of it.
    raw = tmp_path / "noos.raw"
    with open(raw, "wb") as f:
        f.truncate(16 << 20)
    node.cli("image", "import", "noos", str(raw))
    node.cli("vm", "create", "deaf", "--image", "noos", "--memory", "64M", "--start")
    op: Any = node.cli_json("vm", "stop", "deaf", "--timeout", "8", "--no-wait")
    with node.client() as c:
        wait_for("stop operation running", lambda: c.get_operation(op["id"]).status.value == "running",
                 timeout=10, every=0.1)
    time.sleep(1)
    os.kill(node.pid("engine"), signal.SIGKILL)
    time.sleep(0.5)
    node.up()
    with node.client() as c:
        done = c.wait_quiet(op["id"], timeout=60)
        assert done.status.value == "success", done
        assert done.message is not None
        assert c.get_vm("deaf").state.value == "stopped"
        pending = [o for o in c.list_operations(200) if not o.status.done]
        assert pending == []
    assert node.virsh("domstate", "deaf") == "shut off"
    node.cli("vm", "delete", "deaf")
    node.cli("image", "delete", "noos")


def test_agent_restart_adopts_running_vms(node: Node) -> None:
    node.cli("vm", "create", "keep", "--image", "tiny", "--memory", "128M", "--start")
    try:
        qemu_pid = _vm_pid(node, "keep")
        old_agent = node.pid("agent")
        os.kill(old_agent, signal.SIGKILL)
        wait_for("agent restarted", lambda: (node.data_dir / "agent.pid").exists()
                 and node.pid("agent") != old_agent, timeout=30)
        assert _vm_pid(node, "keep") == qemu_pid  # the same QEMU: it outlived the agent
        vm: Any = node.cli_json("vm", "show", "keep")
        assert vm["state"] == "running"
        # Right away, while the new agent may still be starting: the engine waits for it.
        node.cli("vm", "stop", "keep", "--force")
        assert node.virsh("domstate", "keep") == "shut off"
    finally:
        node.cli("vm", "delete", "keep", "--force", check=False)
