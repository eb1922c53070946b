"""A VM's whole life on a real node: CLI and API, real libvirtd and QEMU, the tiny guest."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from nodeutil import Node, wait_for

from corral.api import Event, PowerAction, VmCreate
from corral.errors import WrongState
from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration


def _state(node: Node, name: str) -> str:
    vm: Any = node.cli_json("vm", "show", name)
    return str(vm["state"])


def _booted(node: Node, name: str, times: int = 1) -> bool:
    return node.cli("vm", "console", name, "--log").stdout.count(BOOT_MARKER) >= times


def test_status_reports_virtualization(node: Node) -> None:
    st: Any = node.cli_json("status")
    assert st["hosts"][0]["status"] == "up"
    assert st["hosts"][0]["virt_type"] in ("kvm", "qemu")
    assert "virtualization" in node.cli("status").stdout


def test_vm_lifecycle_through_cli(node: Node) -> None:
    node.cli("vm", "create", "life", "--image", "tiny", "--memory", "256M", "--start")
    assert _state(node, "life") == "running"
    assert node.virsh("domstate", "life") == "running"
    wait_for("boot marker on the serial console", lambda: _booted(node, "life"))
    listed: Any = node.cli_json("vm", "list")
    assert [v["name"] for v in listed] == ["life"]

    # A wrong-state action is refused at once with a clear message.
    refused = node.cli("vm", "start", "life", check=False)
    assert refused.returncode == 2
    assert "cannot start VM life: it is running" in refused.stderr
    refused = node.cli("vm", "delete", "life", check=False)
    assert refused.returncode == 2 and "stop it first" in refused.stderr

    node.cli("vm", "pause", "life")
    assert _state(node, "life") == "paused" and node.virsh("domstate", "life") == "paused"
    node.cli("vm", "resume", "life")
    assert node.virsh("domstate", "life") == "running"

    node.cli("vm", "reboot", "life")
    wait_for("second boot after reboot", lambda: _booted(node, "life", 2))

    # Graceful stop: the tiny guest powers off on the ACPI button well before the timeout.
    stop: Any = node.cli_json("vm", "stop", "life", "--timeout", "60")
    assert stop["status"] == "success"
    assert "forcing" not in (stop["message"] or "")
    assert node.virsh("domstate", "life") == "shut off"

    node.cli("vm", "start", "life")
    wait_for("boot after start", lambda: _booted(node, "life", 3))
    node.cli("vm", "stop", "life", "--force")
    assert _state(node, "life") == "stopped"

    assert node.disk_exists("life")
    node.cli("vm", "delete", "life")
    assert node.cli_json("vm", "list") == []
    assert "life" not in node.virsh("list", "--all", "--name")
    assert not node.disk_exists("life")


def test_vm_gets_dhcp_address_on_default_network(node: Node) -> None:
    node.cli("vm", "create", "dhcp1", "--image", "tiny", "--memory", "128M", "--start")
    try:
        wait_for("DHCP lease", lambda: "CORRAL-TINY-IP eth0 10.210.0." in
                 node.cli("vm", "console", "dhcp1", "--log").stdout)
        with node.client() as c:
            vm = c.get_vm("dhcp1")
            leases = c.leases("default")
        assert any(lease["mac"] == vm.mac for lease in leases)
    finally:
        node.cli("vm", "delete", "dhcp1", "--force")


def test_lifecycle_through_sdk_and_events(node: Node) -> None:
    seen: list[Event] = []
    stop = threading.Event()

    def listen() -> None:
        with node.client() as c:
            for ev in c.events(timeout=60):
                seen.append(ev)
                if stop.is_set():
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    with node.client() as c:
        wait_for("event stream", lambda: True, timeout=1)
        op = c.create_vm(VmCreate(name="sdk1", image="tiny", memory="128M", start=True))
        assert op.status.value in ("pending", "running")
        done = c.wait(op.id, timeout=120)
        assert done.status.value == "success" and done.progress == 100
        assert c.get_vm("sdk1").state.value == "running"
        with pytest.raises(WrongState):
            c.vm_action("sdk1", PowerAction.RESUME)
        c.wait(c.vm_action("sdk1", PowerAction.STOP, force=True).id)
        c.wait(c.delete_vm("sdk1").id)
    wait_for("events of the VM", lambda: any(
        e.type == "vm" and e.data.get("name") == "sdk1" and e.data.get("state") == "deleted"
        for e in seen), timeout=20)
    stop.set()
    ops = [e for e in seen if e.type == "operation" and e.data["resources"].get("vms") == ["sdk1"]]
    assert {e.data["type"] for e in ops} >= {"vm.create", "vm.stop", "vm.delete"}
    assert any(e.data["status"] == "running" for e in ops)
    assert all(e.data["status"] == "success" for e in ops if e.data["progress"] == 100)


def test_bad_input_through_cli_leaves_nothing(node: Node) -> None:
    for args, words in [
        (["vm", "create", "../x", "--image", "tiny"], "name"),
        (["vm", "create", "bad name", "--image", "tiny"], "name"),
        (["vm", "create", "ok1", "--image", "nope"], "image nope not found"),
        (["vm", "create", "ok1", "--image", "tiny", "--memory", "0"], "memory"),
        (["vm", "create", "ok1", "--image", "tiny", "--memory", "1T"], "refuses it: memory"),
    ]:
        proc = node.cli(*args, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert words in proc.stderr, (args, proc.stderr)
    assert node.cli_json("vm", "list") == []
    assert not node.disk_exists("ok1")


def test_image_import_and_delete(node: Node, tmp_path: Any) -> None:
    raw = tmp_path / "blank.raw"
    with open(raw, "wb") as f:
        f.truncate(32 << 20)
    node.cli("image", "import", "blank", str(raw))
    images: Any = node.cli_json("image", "list")
    blank = next(i for i in images if i["name"] == "blank")
    assert blank["status"] == "ready" and blank["virtual_size"] == 32 << 20
    node.cli("vm", "create", "user1", "--image", "blank", "--memory", "64M")
    refused = node.cli("image", "delete", "blank", check=False)
    assert refused.returncode == 2 and "used by VMs: user1" in refused.stderr
    node.cli("vm", "delete", "user1")
    node.cli("image", "delete", "blank")
    assert "blank" not in json.dumps(node.cli_json("image", "list"))
    bad = tmp_path / "text.img"
    bad.write_text("not an image at all")
    proc = node.cli("image", "import", "junk", str(bad), "--format", "qcow2", check=False)
    assert proc.returncode != 0 and "raw, not qcow2" in proc.stderr
    assert "junk" not in json.dumps(node.cli_json("image", "list"))
