"""The tiny guest's cloud-init, run on this host with busybox against a directory standing for /.

The seed's files are rendered by corral.cloudinit exactly as the engine does; the guest's
script (tiny_files/cloud-init) and YAML reader (tiny_files/yamlflat.awk) run under the same
busybox the guest has, with CORRAL_TINY_ROOT pointing at a scratch root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from corral.cloudinit import render
from corral.images import tiny
from corral.images.tiny import data_file
from corral.images.tiny_ssh import elf_interpreter, elf_needed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9vb2Jhcg me@host"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB other"
MAC = "52:54:00:aa:bb:cc"


def _busybox() -> str:
    path = shutil.which("busybox") or "/bin/busybox"
    assert Path(path).exists(), "busybox is needed (scripts/install-deps.sh installs busybox-static)"
    return path


def _guest(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "root"
    for d in ("run/cloud/seed", "etc", "root"):
        (root / d).mkdir(parents=True)
    for name, text in files.items():
        (root / "run/cloud/seed" / name).write_text(text)
    (tmp_path / "yamlflat.awk").write_bytes(data_file("yamlflat.awk"))
    (tmp_path / "cloud-init").write_bytes(data_file("cloud-init"))
    (tmp_path / "mac").write_text(MAC + "\n")
    return root


def _run(tmp_path: Path, root: Path, stage: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_TINY_ROOT": str(root), "CORRAL_TINY_FLAT": str(tmp_path / "yamlflat.awk"),
           "CORRAL_TINY_MAC_FILE": str(tmp_path / "mac")}
    proc = subprocess.run([_busybox(), "sh", str(tmp_path / "cloud-init"), stage], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc


def _env(root: Path) -> dict[str, str]:
    out = {}
    for line in (root / "run/cloud/network.env").read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = value.strip("'").strip()
    return out


def test_hostname_keys_password_runcmd_once_per_instance(tmp_path: Path) -> None:
    user_data = """#cloud-config
runcmd:
  - echo "ran $((1 + 1))" >> ran
  - [sh, -c, "echo \\"it's\\" quoted > argv"]
users:
  - default
  - name: root
    ssh_authorized_keys: [ "KEY2" ]
""".replace("KEY2", KEY2)
    files = render(instance="vm-1", hostname="web-1", ssh_authorized_keys=[KEY],
                   password_hash="$6$saltsalt$abc", user_data=user_data, mac=MAC).as_dict()
    root = _guest(tmp_path, files)
    _run(tmp_path, root, "local")
    assert (root / "etc/hostname").read_text() == "web-1\n"
    assert "127.0.1.1\tweb-1" in (root / "etc/hosts").read_text()
    assert (root / "root/.ssh/authorized_keys").read_text().splitlines() == [KEY, KEY2]
    assert oct((root / "root/.ssh/authorized_keys").stat().st_mode & 0o777) == "0o600"
    assert (root / "etc/shadow").read_text().startswith("root:$6$saltsalt$abc:")
    assert _env(root)["NET_MODE"] == "dhcp"

    _run(tmp_path, root, "final")
    assert (root / "root/ran").read_text() == "ran 2\n"
    assert (root / "root/argv").read_text() == "it's quoted\n"
    assert (root / "var/lib/cloud/instance-id").read_text() == "vm-1\n"
    _run(tmp_path, root, "final")  # the same instance: runcmd does not run again
    assert (root / "root/ran").read_text() == "ran 2\n"


def test_a_new_instance_id_runs_runcmd_again(tmp_path: Path) -> None:
    ud = "#cloud-config\nruncmd: [echo again >> ran]\n"
    root = _guest(tmp_path, render(instance="vm-1", hostname="h", user_data=ud).as_dict())
    _run(tmp_path, root, "local")
    _run(tmp_path, root, "final")
    files = render(instance="vm-1.1", hostname="h", user_data=ud).as_dict()
    for name, text in files.items():
        (root / "run/cloud/seed" / name).write_text(text)
    _run(tmp_path, root, "local")
    _run(tmp_path, root, "final")
    assert (root / "root/ran").read_text() == "again\nagain\n"


def test_script_user_data_runs_and_meta_data_keys_go_to_root(tmp_path: Path) -> None:
    files = render(instance="i", hostname="h", ssh_authorized_keys=[KEY],
                   user_data="#!/bin/sh\necho scripted > scripted\n").as_dict()
    root = _guest(tmp_path, files)
    _run(tmp_path, root, "local")
    _run(tmp_path, root, "final")
    assert (root / "root/scripted").read_text() == "scripted\n"
    assert (root / "root/.ssh/authorized_keys").read_text().strip() == KEY


@pytest.mark.parametrize(
    ("network_config", "expected"),
    [
        ("""version: 2
ethernets:
  nic0:
    match: {macaddress: "52:54:00:AA:BB:CC"}
    addresses: [10.210.0.50/24]
    routes: [{to: default, via: 10.210.0.1}]
    nameservers: {addresses: [10.210.0.1, 10.210.0.2]}
""", {"NET_MODE": "static", "NET_ADDRS": "10.210.0.50/24", "NET_GW": "10.210.0.1",
      "NET_DNS": "10.210.0.1 10.210.0.2"}),
        ("network: {version: 2, ethernets: {eth0: {addresses: [10.0.0.5/8], gateway4: 10.0.0.1}}}\n",
         {"NET_MODE": "static", "NET_ADDRS": "10.0.0.5/8", "NET_GW": "10.0.0.1"}),
        ("version: 2\nethernets: {other: {match: {macaddress: '00:11:22:33:44:55'}, dhcp4: true},"
         " lan: {match: {name: eth0}, dhcp4: true}}\n", {"NET_MODE": "dhcp"}),
        ("version: 2\nethernets: {other: {match: {macaddress: '00:11:22:33:44:55'}, dhcp4: true},"
         " x: {match: {macaddress: '00:11:22:33:44:56'}}}\n", {"NET_MODE": "none"}),
        ("version: 1\nconfig: [{type: physical, name: eth0, subnets: [{type: dhcp}]}]\n",
         {"NET_MODE": "dhcp"}),
    ],
)
def test_network_config(tmp_path: Path, network_config: str, expected: dict[str, str]) -> None:
    files = render(instance="i", hostname="h", network_config=network_config, mac=MAC).as_dict()
    root = _guest(tmp_path, files)
    _run(tmp_path, root, "local")
    env = _env(root)
    for key, value in expected.items():
        assert env[key] == value, (key, env)


def test_rootfs_carries_cloud_init_and_the_init_uses_it() -> None:
    files = {target for _, target, _ in tiny._ROOTFS_FILES}
    assert {"usr/lib/corral/cloud-init", "usr/lib/corral/yamlflat.awk", "etc/shells"} <= files
    init = data_file("init").decode()
    assert init.index('"$CLOUD_INIT" local') < init.index("udhcpc -f -i eth0")
    assert init.index("dropbear -R") < init.index(tiny.BOOT_MARKER)
    assert "final" in init[init.index(tiny.BOOT_MARKER):]
    assert tiny.CLOUDINIT_MARKER in data_file("cloud-init").decode()
    for module in ("virtio_scsi", "sr_mod", "isofs"):
        assert module in tiny.INITRAMFS_MODULES


def test_elf_needed_reads_a_real_binary() -> None:
    data = Path(shutil.which("ls") or "/bin/ls").read_bytes()
    assert "libc.so.6" in elf_needed(data)
    assert (elf_interpreter(data) or "").startswith("/lib")
