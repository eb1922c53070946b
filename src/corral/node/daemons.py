"""libvirtd and virtlogd: started by corral when none runs (there may be no systemd)."""

from __future__ import annotations

import shutil
import subprocess
import time

import libvirt

from corral.errors import Unavailable


def libvirt_works(uri: str = "qemu:///system") -> bool:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    conn.close()
    return True


def _running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True, check=False).returncode == 0


def ensure_libvirtd(uri: str = "qemu:///system", timeout: float = 30.0) -> str:
    """Start virtlogd and libvirtd if libvirt does not answer; say what was done."""
    if libvirt_works(uri):
        return "libvirtd already running"
    for daemon in ("virtlogd", "libvirtd"):
        if shutil.which(daemon) is None:
            raise Unavailable(f"{daemon} is not installed: run `make run` or "
                              "`apt-get install libvirt-daemon-system`")
    if not _running("virtlogd"):
        subprocess.run(["virtlogd", "-d"], check=True, timeout=30)
    if not _running("libvirtd"):
        subprocess.run(["libvirtd", "-d"], check=True, timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if libvirt_works(uri):
            return "started libvirtd and virtlogd"
        time.sleep(0.3)
    raise Unavailable(f"libvirtd did not answer at {uri} within {timeout:g} s")
