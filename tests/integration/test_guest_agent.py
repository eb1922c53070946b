"""The QEMU guest agent in a real guest: the tiny guest built with qemu-guest-agent
(`corral image build-tiny NAME --guest-agent`) answers `vm show`, runs `vm exec` commands,
reports its addresses, takes the clock after a pause and shuts down through the agent; the
plain tiny guest has none, and `vm exec` says so. Also: a watchdog and a video card the guest
sees, and a VNC display listening on the host's loopback only."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from nodeutil import Node, wait_for

from corral.images.tiny import BOOT_MARKER
from corral.images.tiny_agent import fetch_agent_packages

pytestmark = pytest.mark.integration

I6300ESB = "0x25ab"  # the PCI device id of Intel's 6300ESB watchdog


@pytest.fixture(scope="module")
def agent_image(node: Node, tiny_cache: Path) -> Iterator[str]:
    """Image ``tinyga``: the tiny guest with qemu-guest-agent (its packages downloaded here,
    in the root namespace: the lab host has no route to the mirror)."""
    debs = node.data_dir / "agent" / "storage" / "build" / "cache" / "debs"
    for deb in fetch_agent_packages(tiny_cache, lambda _pct, _msg: None):
        shutil.copy2(deb, debs / deb.name)
    node.cli("image", "build-tiny", "tinyga", "--guest-agent", timeout=600)
    try:
        yield "tinyga"
    finally:
        node.cli("image", "delete", "tinyga", check=False)


def _show(node: Node, vm: str) -> dict[str, object]:
    shown = node.cli_json("vm", "show", vm)
    assert isinstance(shown, dict)
    return shown


def _exec(node: Node, vm: str, *command: str) -> tuple[int, str, str]:
    proc = node.cli("vm", "exec", vm, "--", *command, check=False, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_a_guest_with_the_agent(node: Node, agent_image: str) -> None:
    node.cli("vm", "create", "ga1", "--image", agent_image, "--memory", "256M",
             "--watchdog", "reset", "--video", "virtio", "--start")
    try:
        wait_for("the guest agent of ga1 to answer", lambda: _show(node, "ga1")["guest_agent"]
                 is True, timeout=240, every=2)

        rc, out, _err = _exec(node, "ga1", "sh", "-c", "echo hello from $(uname -s)")
        assert (rc, out) == (0, "hello from Linux\n")
        rc, out, err = _exec(node, "ga1", "sh", "-c", "echo half; echo broken >&2; exit 7")
        assert (rc, out, err) == (7, "half\n", "broken\n")
        answer = json.loads(node.cli("vm", "exec", "ga1", "--output", "json", "--", "false",
                                     check=False).stdout)
        assert (answer["exit_code"], answer["timed_out"]) == (1, False)
        missing = node.cli("vm", "exec", "ga1", "--", "no-such-program", check=False)
        assert missing.returncode == 2 and "cannot run no-such-program" in missing.stderr

        # the guest's own interface names come from the agent
        wait_for("ga1's eth0 address from its guest agent", lambda: any(
            a.get("interface") == "eth0" and a["ip"].startswith("10.")
            for a in _addresses(node, "ga1")), timeout=120, every=2)
        assert "eth0" in node.virsh("domifaddr", "ga1", "--source", "agent")

        # the devices asked for, as the guest sees them and libvirt runs them
        rc, out, _err = _exec(node, "ga1", "sh", "-c", "cat /sys/bus/pci/devices/*/device")
        assert rc == 0 and I6300ESB in out.split()
        live = etree.fromstring(node.virsh("dumpxml", "ga1").encode())
        assert [(w.get("model"), w.get("action")) for w in live.iterfind(
            "devices/watchdog")] == [("i6300esb", "reset")]
        assert [m.get("type") for m in live.iterfind("devices/video/model")] == ["virtio"]

        _vnc_on_loopback_only(node, "ga1", live)
        _clock_set_after_a_pause(node, "ga1")
        _clock_set_after_a_revert(node, "ga1")

        # no ACPI button handler left: only the agent can make it shut down cleanly
        assert _exec(node, "ga1", "killall", "acpid")[0] == 0
        node.cli("vm", "stop", "ga1", "--timeout", "90", timeout=300)
        assert _show(node, "ga1")["state"] == "stopped"
        assert "tiny: shutting down (poweroff)" in node.console_log("ga1")
        assert _show(node, "ga1")["guest_agent"] is None  # not running: not asked
    finally:
        node.cli("vm", "delete", "ga1", "--force", check=False)


def test_a_guest_without_the_agent(node: Node) -> None:
    node.cli("vm", "create", "plain1", "--image", "tiny", "--memory", "256M", "--start")
    try:
        wait_for("plain1 to boot", lambda: BOOT_MARKER in node.console_log("plain1"),
                 timeout=180)
        assert _show(node, "plain1")["guest_agent"] is False
        refused = node.cli("vm", "exec", "plain1", "--", "true", check=False)
        assert refused.returncode == 2  # a 4xx
        assert "(conflict)" in refused.stderr
        assert "qemu-guest-agent is not running in the guest" in " ".join(refused.stderr.split())
        # shutdown falls back to the ACPI power button
        node.cli("vm", "stop", "plain1", "--timeout", "90", timeout=300)
        assert _show(node, "plain1")["state"] == "stopped"
        assert "tiny: shutting down (poweroff)" in node.console_log("plain1")
    finally:
        node.cli("vm", "delete", "plain1", "--force", check=False)


def _addresses(node: Node, vm: str) -> list[dict[str, str]]:
    found = node.cli_json("vm", "ip", vm)
    assert isinstance(found, list)
    return found


def _vnc_on_loopback_only(node: Node, vm: str, live: etree._Element) -> None:
    """`vm vnc` names the port libvirt gave the display, and QEMU listens there on the
    lab host's loopback only."""
    graphics = live.find("devices/graphics")
    assert graphics is not None
    port = int(graphics.get("port") or 0)
    assert port >= 5900
    text = " ".join(node.cli("vm", "vnc", vm).stdout.split())
    assert f"ssh -N -L {port}:127.0.0.1:{port} root@" in text
    listening = node.host.run(["ss", "-Htlnp", f"sport = :{port}"]).stdout.splitlines()
    assert listening, f"nothing listens on port {port}"
    for line in listening:
        local = line.split()[3]
        assert local == f"127.0.0.1:{port}" and "qemu" in line, line


def _assert_guest_clock_is_the_hosts(node: Node, vm: str) -> None:
    rc, out, _err = _exec(node, vm, "date", "+%s")
    host_now = time.time()
    assert rc == 0 and re.fullmatch(r"\d+\n", out)
    assert abs(host_now - int(out)) < 5, f"guest {out.strip()}, host {host_now:.0f}"


def _clock_set_after_a_pause(node: Node, vm: str) -> None:
    """The guest's clock stands still while it is paused (TCG's virtual clock); the agent
    sets it from the host's at resume."""
    node.cli("vm", "pause", vm)
    time.sleep(10)  # the lag that the resume must make up
    node.cli("vm", "resume", vm)
    _assert_guest_clock_is_the_hosts(node, vm)


def _clock_set_after_a_revert(node: Node, vm: str) -> None:
    """Reverting to a memory snapshot takes the guest's clock back to when it was taken;
    the agent sets it from the host's."""
    node.cli("vm", "snapshot", "create", vm, "s1", "--memory")
    time.sleep(10)  # the lag that the revert must make up
    node.cli("vm", "snapshot", "revert", vm, "s1")
    _assert_guest_clock_is_the_hosts(node, vm)
    node.cli("vm", "snapshot", "delete", vm, "s1")
