"""Agents report; the engine does not poll: on the real node (`corral up` in a lab host),
a guest that powers itself off shows as stopped at once (libvirt's lifecycle event, pushed
by the agent), a domain destroyed behind corral's back is seen through the heartbeat's
digest, and an agent killed and restarted by `corral up` leaves its host up."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from nodeutil import Node, wait_for
from storageutil import running_vm


def _state(node: Node, vm: str) -> str:
    shown: Any = node.cli_json("vm", "show", vm)
    return str(shown["state"])


def _host(node: Node) -> dict[str, Any]:
    hosts: Any = node.cli_json("host", "list")
    [host] = hosts
    return dict(host)


def test_a_guest_powered_off_from_inside_shows_stopped_at_once(node: Node) -> None:
    with running_vm(node, "evt1") as vm:
        node.console_run(vm, "poweroff -f >/dev/null 2>&1 &", timeout=30)
        # Bounded wait: the event arrives in well under a second; polling took seconds.
        wait_for("evt1 stopped", lambda: _state(node, vm) == "stopped", timeout=10,
                 every=0.1)
        shown: Any = node.cli_json("vm", "show", vm)
        assert shown["desired_power"] == "stopped"  # the guest's own shutdown: the intent


def test_a_domain_destroyed_behind_corrals_back_is_seen(node: Node) -> None:
    with running_vm(node, "evt2") as vm:
        node.virsh("destroy", vm)
        wait_for("evt2 stopped", lambda: _state(node, vm) == "stopped", timeout=10,
                 every=0.1)


def test_a_killed_agent_comes_back_and_reports_again(node: Node) -> None:
    assert _host(node)["status"] == "up"
    old = node.pid("agent")
    os.kill(old, signal.SIGKILL)
    wait_for("agent restarted", lambda: (node.data_dir / "agent.pid").exists()
             and node.pid("agent") != old, timeout=30)
    wait_for("host up", lambda: _host(node)["status"] == "up", timeout=30)
    seen = _host(node)["last_seen"]
    time.sleep(0.1)
    assert _host(node)["status"] == "up" and seen
