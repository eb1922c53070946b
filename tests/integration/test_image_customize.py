"""Offline customization with real libguestfs (appliance under TCG) on a node, checked by booting.

The tiny guest is busybox: libguestfs does not know its OS, so it can inject files and run
commands but cannot set a hostname or a password until the guest says it is Debian
(/etc/os-release) and has an /etc/shadow. The first customization does exactly that; the
next ones set the hostname and root's password, and what they did is then read on the
serial console of a VM booted from the result (the login shell prints it: /etc/profile).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from nodeutil import Node, wait_for

pytestmark = pytest.mark.integration

PROFILE_LINES = ("echo HELLO-FROM-FILE: $(cat /root/hello.txt); "
                 "echo SHADOW-ROOT: $(grep ^root: /etc/shadow | cut -d: -f2 | cut -c1-3)")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_customize_image_then_vm(node: Node, tmp_path: Path) -> None:
    disk = node.data_dir / "agent" / "storage" / "vms" / "imc1.qcow2"
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="corral tiny"\n')
    hello = tmp_path / "hello.txt"
    hello.write_text("hello world\n")
    bye = tmp_path / "bye.txt"
    bye.write_text("goodbye\n")
    node.cli("image", "build-tiny", "imcust", timeout=300)
    try:
        # 1. Files and commands work on any Linux guest.
        node.cli("image", "customize", "imcust", "--upload", f"{os_release}:/etc/os-release",
                 "--run", "echo 'root:*:19000:0:99999:7:::' > /etc/shadow", timeout=600)
        # 2. Now libguestfs sees Debian: hostname and password too.
        op: Any = node.cli_json(
            "image", "customize", "imcust", "--hostname", "imguest",
            "--password", "root:corral-secret", "--upload", f"{hello}:/root/hello.txt",
            "--run", f"echo '{PROFILE_LINES}' >> /etc/profile")
        assert op["status"] == "success", op
        assert "hostname imguest" in op["message"] and "password of root" in op["message"]
        images: Any = node.cli_json("image", "list")
        assert next(i for i in images if i["name"] == "imcust")["status"] == "ready"
        with sqlite3.connect(node.data_dir / "corral.db") as db:  # the secret is not kept
            stored = " ".join(str(p) for (p,) in db.execute("SELECT params FROM operations"))
        assert "corral-secret" not in stored and "(removed)" in stored

        node.cli("vm", "create", "imc1", "--image", "imcust", "--memory", "128M", "--start")
        wait_for("the customized guest's login shell", lambda: "SHADOW-ROOT:" in node.console_log("imc1"),
                 timeout=120)
        log = node.console_log("imc1")
        assert "HELLO-FROM-FILE: hello world" in log
        assert "SHADOW-ROOT: $6$" in log  # a SHA-512 crypt hash, set by --password
        assert "root@imguest:" in log  # the prompt shows the hostname

        # Refused at once: a running VM, and an image that VMs are built on.
        refused = node.cli("vm", "customize", "imc1", "--hostname", "x", check=False)
        assert refused.returncode == 2 and "it is running; stop it first" in refused.stderr
        refused = node.cli("image", "customize", "imcust", "--hostname", "x", check=False)
        assert refused.returncode == 2 and "is the base of VMs imc1" in refused.stderr

        node.cli("vm", "stop", "imc1", "--force")
        # 3. A failing step changes nothing on the disk.
        before = _sha(disk)
        failed = node.cli("vm", "customize", "imc1", "--upload", f"{bye}:/root/hello.txt",
                          "--run", "false", check=False, timeout=600)
        assert failed.returncode == 1, failed.stderr
        assert "customize VM imc1 failed: virt-customize failed" in failed.stderr
        assert _sha(disk) == before
        assert sorted(p.name for p in disk.parent.glob("imc1.*")) == ["imc1.qcow2"]
        ops: Any = node.cli_json("operation", "list")
        stored = next(o for o in ops if o["type"] == "vm.customize")
        assert stored["status"] == "failure"

        # 4. The stopped VM's own disk.
        node.cli("vm", "customize", "imc1", "--hostname", "imguest2",
                 "--upload", f"{bye}:/root/hello.txt", timeout=600)
        node.cli("vm", "start", "imc1")
        wait_for("second boot", lambda: node.console_log("imc1").count("SHADOW-ROOT:") >= 2,
                 timeout=120)
        log = node.console_log("imc1")
        assert "HELLO-FROM-FILE: goodbye" in log and "root@imguest2:" in log
    finally:
        node.cli("vm", "delete", "imc1", "--force", check=False)
        node.cli("image", "delete", "imcust", check=False)
    assert "imcust" not in node.cli("image", "list").stdout


def test_customize_refuses_bad_requests_at_once(node: Node) -> None:
    missing = node.cli("image", "customize", "no-such-image", "--hostname", "x", check=False)
    assert missing.returncode == 2 and "image no-such-image not found" in missing.stderr
    bad = node.cli("image", "customize", "tiny", "--upload", "/nonexistent:/x", check=False)
    assert bad.returncode == 2 and "cannot read /nonexistent" in bad.stderr
    bad = node.cli("vm", "customize", "nope", "--password", "root", check=False)
    assert bad.returncode == 2 and "--password takes A:B" in bad.stderr
