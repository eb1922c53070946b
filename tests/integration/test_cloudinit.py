"""cloud-init and SSH on a real node: a tiny VM made through the CLI with a key, a host name and
a runcmd; its address from `corral vm ip`; `corral vm ssh` into it from inside the lab host
(the guests' network, 10.210.0.0/24, lives there); the seed rebuilt while stopped.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from nodeutil import CORRAL, Node, wait_for

from corral.images.tiny import CLOUDINIT_MARKER

pytestmark = pytest.mark.integration


def _ssh(node: Node, name: str, command: str, timeout: float = 90) -> str:
    """`corral vm ssh NAME -- COMMAND` run inside the lab host, retried until the guest answers."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        proc = node.host.run([*CORRAL, "vm", "ssh", name, "--wait", "30", "--", command],
                             env=node.env, timeout=60, check=False)
        if proc.returncode == 0:
            return proc.stdout
        last = f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
        time.sleep(1)
    raise AssertionError(f"`corral vm ssh {name}` did not succeed within {timeout:g} s: {last}")


def _keypair(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "corral-test", "-f", str(key)],
                   check=True, timeout=30)
    return key.with_suffix(".pub")


def test_cloud_init_ssh_and_vm_ip(node: Node, tmp_path: Path) -> None:
    pub = _keypair(tmp_path)
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nruncmd:\n  - echo runcmd-ran > /root/ran\n"
                         "  - [sh, -c, 'cat /var/lib/cloud/instance-id > /root/instance']\n")
    seed = node.data_dir / "agent" / "storage" / "vms" / "cia-cidata.iso"
    try:
        node.cli("vm", "create", "cia", "--image", "tiny", "--memory", "128M",
                 "--hostname", "ci-alpha", "--ssh-key", str(pub), "--user-data", str(user_data),
                 "--start")
        vm: Any = node.cli_json("vm", "show", "cia")
        assert vm["state"] == "running"
        assert vm["cloud_init"]["hostname"] == "ci-alpha"
        assert vm["cloud_init"]["ssh_key_file"] == str(pub)
        assert vm["cloud_init"]["ssh_authorized_keys"] == [pub.read_text().strip()]
        assert seed.is_file()
        xml = node.virsh("dumpxml", "cia")
        assert str(seed) in xml and "cdrom" in xml

        addresses: Any = node.cli_json("vm", "ip", "cia", "--wait", "90")
        dhcp = [a for a in addresses if a["source"] == "dhcp"]
        assert dhcp and dhcp[0]["ip"].startswith("10.210.0."), addresses
        assert dhcp[0]["mac"] == vm["mac"]

        out = _ssh(node, "cia", "hostname; cat /root/ran /root/instance")
        assert out.split() == ["ci-alpha", "runcmd-ran", vm["id"]]
        wait_for("cloud-init marker on the console",
                 lambda: CLOUDINIT_MARKER in node.console_log("cia"),
                 timeout=30)
        table = node.cli("vm", "ip", "cia").stdout
        assert dhcp[0]["ip"] in table and "dhcp" in table

        # Settings change only while stopped; the new seed has a new instance id, so the
        # guest applies it again (runcmd included).
        refused = node.cli("vm", "cloud-init", "cia", "--hostname", "ci-beta", check=False)
        assert refused.returncode == 2 and "stop it first" in refused.stderr
        node.cli("vm", "stop", "cia", "--force")
        node.cli("vm", "cloud-init", "cia", "--hostname", "ci-beta")
        assert node.cli_json("vm", "show", "cia")["cloud_init"]["hostname"] == "ci-beta"  # type: ignore[index]
        node.cli("vm", "start", "cia")
        out = _ssh(node, "cia", "hostname; cat /root/instance")
        assert out.split() == ["ci-beta", f"{vm['id']}.1"]

        # No seed at all: the CD-ROM goes away with it.
        node.cli("vm", "stop", "cia", "--force")
        node.cli("vm", "cloud-init", "cia", "--remove")
        assert not seed.exists()
        assert "cidata" not in node.virsh("dumpxml", "cia")
        assert node.cli_json("vm", "show", "cia")["cloud_init"] is None  # type: ignore[index]
    finally:
        node.cli("vm", "delete", "cia", "--force", check=False)
    assert not seed.exists()
    assert node.virsh("domstate", "cia") == ""


def test_bad_cloud_init_input_makes_nothing(node: Node, tmp_path: Path) -> None:
    private = _keypair(tmp_path).with_suffix("")
    refused = node.cli("vm", "create", "cib", "--image", "tiny", "--ssh-key", str(private), check=False)
    assert refused.returncode == 2
    assert "ssh_authorized_keys" in refused.stderr and "SSH public key" in refused.stderr
    refused = node.cli("vm", "create", "cib", "--image", "tiny", "--hostname", "under_score",
                       check=False)
    assert refused.returncode == 2 and "hostname" in refused.stderr
    missing = node.cli("vm", "create", "cib", "--image", "tiny", "--user-data", str(tmp_path / "nope"),
                       check=False)
    assert missing.returncode == 2 and "cannot read user_data file" in missing.stderr
    listed: Any = node.cli_json("vm", "list")
    assert "cib" not in [v["name"] for v in listed]
    assert not (node.data_dir / "agent" / "storage" / "vms" / "cib-cidata.iso").exists()
