"""libvirtd and virtlogd: started by corral when none answers (there may be no systemd).

Each daemon runs in the foreground under ``tini -s``: QEMU processes are double-forked by
libvirtd, and where PID 1 does not reap orphans (containers, sandboxes) every QEMU that
exits would stay a zombie that libvirt waits on when it stops a domain. tini, a child
subreaper, reaps them.

Where corral uses TCG although /dev/kvm exists (nested virtualization), libvirtd runs in a
private mount namespace with /dev/kvm hidden: libvirt 9 otherwise finds KVM "usable" on
every call, throws its capability cache away and probes QEMU again (about 10 s per
domain definition here).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from corral.errors import Unavailable


def libvirt_works(uri: str = "qemu:///system") -> bool:
    # virsh rather than the libvirt module: the engine process need not load libvirt (~15 MB).
    try:
        proc = subprocess.run(["virsh", "-c", uri, "version"], capture_output=True, timeout=15,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise Unavailable(f"{binary} is not installed: run `make run` or `apt-get install {package}`")
    return path


# Runs "$@" with /dev/kvm replaced by /dev/null in a private mount namespace. The script is a
# constant: the command arrives as positional arguments, never inside the string.
_HIDE_KVM = 'mount --bind /dev/null /dev/kvm && exec "$@"'


def spawn_daemon(argv: list[str], log: Path, hide_kvm: bool = False) -> subprocess.Popen[bytes]:
    """Run a daemon in the foreground under tini, in its own session, detached from us."""
    full = [_need("tini", "tini"), "-s", "--", *argv]
    if hide_kvm and Path("/dev/kvm").exists():
        full = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _HIDE_KVM,
                "sh", *full]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def ensure_libvirtd(uri: str = "qemu:///system", log_dir: Path = Path("/var/log/libvirt"),
                    timeout: float = 30.0, hide_kvm: bool = False) -> str:
    """Start virtlogd and libvirtd if libvirt does not answer; say what was done."""
    if libvirt_works(uri):
        return "libvirtd already running (started outside corral)"
    virtlogd = _need("virtlogd", "libvirt-daemon-system")
    libvirtd = _need("libvirtd", "libvirt-daemon-system")
    # A daemon that already runs in this mount namespace holds its pid-file lock, so a
    # second copy exits at once: no need to look for it first.
    spawn_daemon([virtlogd], log_dir / "corral-virtlogd.log")
    daemon = spawn_daemon([libvirtd], log_dir / "corral-libvirtd.log", hide_kvm)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if libvirt_works(uri):
            return "started libvirtd and virtlogd"
        if daemon.poll() is not None:
            break
        time.sleep(0.3)
    raise Unavailable(f"libvirtd did not answer at {uri} within {timeout:g} s "
                      f"(see {log_dir / 'corral-libvirtd.log'})")
