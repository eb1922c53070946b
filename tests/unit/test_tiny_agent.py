"""The tiny guest's QEMU guest agent: what the build puts into the root file system, the
guest's /sbin/shutdown that qemu-ga's guest-shutdown runs, and the init lines that start
qemu-ga on its port. A real guest running it: tests/integration/test_guest_agent.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from corral.images import tiny
from corral.images.tiny import data_file
from corral.images.tiny_agent import AGENT_BINARY, AGENT_MODULES, install_guest_agent
from corral.images.tiny_ssh import GUEST_LIB_DIR, elf_needed


def _fake_agent_deb(tmp_path: Path) -> Path:
    """A qemu-guest-agent package whose qemu-ga is this host's env(1) (it links to libc)."""
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        "Package: qemu-guest-agent\nVersion: 1\nArchitecture: amd64\n"
        "Maintainer: corral tests <t@example.org>\nDescription: a stand-in\n")
    (tree / "usr/sbin").mkdir(parents=True)
    shutil.copy2("/usr/bin/env", tree / AGENT_BINARY)
    deb = tmp_path / "qemu-guest-agent_1_amd64.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)],
                   check=True, capture_output=True, timeout=60)
    return deb


def test_the_agent_its_libraries_its_loader_and_shutdown_go_into_the_guest(
        tmp_path: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.fail("dpkg-deb is missing: install the dpkg package")
    root = tmp_path / "root"
    added = install_guest_agent(root, [_fake_agent_deb(tmp_path)], tmp_path / "work")
    assert AGENT_BINARY in added and "sbin/shutdown" in added
    assert f"{GUEST_LIB_DIR}/libc.so.6" in added
    assert (root / "lib64/ld-linux-x86-64.so.2").is_file()
    # every library any copied ELF file needs is in the guest
    for rel in added:
        path = root / rel
        if path.read_bytes()[:4] == b"\x7fELF":
            for soname in elf_needed(path.read_bytes()):
                assert (root / GUEST_LIB_DIR / soname).is_file(), (rel, soname)
    assert os.access(root / "sbin/shutdown", os.X_OK)


def test_a_library_already_in_the_guest_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / GUEST_LIB_DIR).mkdir(parents=True)
    (root / GUEST_LIB_DIR / "libc.so.6").write_bytes(b"dropbear's libc")
    added = install_guest_agent(root, [_fake_agent_deb(tmp_path)], tmp_path / "work")
    assert f"{GUEST_LIB_DIR}/libc.so.6" not in added
    assert (root / GUEST_LIB_DIR / "libc.so.6").read_bytes() == b"dropbear's libc"


@pytest.mark.parametrize(("args", "action"), [
    (["-h", "-P", "+0", "hypervisor initiated shutdown"], "poweroff"),
    (["-h", "-H", "+0", "hypervisor initiated shutdown"], "poweroff"),
    (["-h", "-r", "+0", "hypervisor initiated shutdown"], "reboot"),
])
def test_shutdown_answers_at_once_then_powers_off_or_reboots(
        tmp_path: Path, args: list[str], action: str) -> None:
    """qemu-ga reports the exit status of /sbin/shutdown: it must exit 0 before PID 1 ends
    every process."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    done = tmp_path / "done"
    for name in ("poweroff", "reboot"):
        (bin_dir / name).write_text(f"#!/bin/sh\necho {name} >{done}\n")
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "shutdown"
    script.write_bytes(data_file("qga-shutdown"))
    script.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run([str(script), *args], env=env, capture_output=True, timeout=10,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 10
    # The shell makes the file (>) before echo writes to it: wait for the line itself.
    while not (done.exists() and done.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.read_text().strip() == action


def test_init_starts_the_agent_on_the_port_named_for_it() -> None:
    text = data_file("init").decode()
    block = text[text.index("if [ -x /usr/sbin/qemu-ga ]"):text.index(tiny.BOOT_MARKER)]
    assert "/sys/class/virtio-ports/*/name" in block
    assert "org.qemu.guest_agent.0" in block
    assert "qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0" in block
    assert AGENT_MODULES == ("virtio_console",)
    assert "virtio_console" not in tiny.INITRAMFS_MODULES  # the plain tiny guest has no port
