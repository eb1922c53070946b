"""libvirtd and virtlogd: started by corral when none answers (there may be no systemd).

Each daemon runs in the foreground under ``tini -s``: QEMU processes are double-forked by
libvirtd, and where PID 1 does not reap orphans (containers, sandboxes) every QEMU that
exits would stay a zombie that libvirt waits on when it stops a domain. tini, a child
subreaper, reaps them.

Where corral uses TCG although /dev/kvm exists (nested virtualization), libvirtd runs in a
private mount namespace where KVM is cleanly absent: a root-only (0600) copy of the
/dev/null device node is bound over /dev/kvm. libvirt keeps its QEMU capability cache only
while its own "is KVM usable by the QEMU user" check agrees with what the cached probe
found. Binding /dev/null itself there (as corral once did) made the check say yes (mode
0666) and the probe say no (not a KVM device), so every capability lookup threw the cache
away and probed QEMU again: 11.5 s per domain definition. With a root-only node both say
no, and a define takes milliseconds. It must be a device node, not a regular file: libvirt
moves the mounts under /dev into each QEMU's own /dev, and moving a regular file's bind
mount there fails ("Unable to move ... mount to /dev/kvm"). Hosts that use KVM leave
/dev/kvm alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
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


def _pids(name: str) -> list[int]:
    proc = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, timeout=10,
                          check=False)
    return [int(p) for p in proc.stdout.split()]


def _stop(pids: list[int], timeout: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            raise Unavailable(f"libvirtd {pids} did not stop within {timeout:g} s")
        time.sleep(0.1)


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise Unavailable(f"{binary} is not installed: run `make run` or `apt-get install {package}`")
    return path


# Runs "$@" with the node $1 bound over /dev/kvm in a private mount namespace. The script is
# a constant: the file and the command arrive as positional arguments, never inside it.
_HIDE_KVM = 'mount --bind "$1" /dev/kvm && shift && exec "$@"'
# What libvirtd sees as /dev/kvm where KVM is hidden: no KVM device, and not accessible to
# the QEMU user, so libvirt's usability check and its probe agree (see the module docstring).
NO_KVM = Path("/var/lib/libvirt/corral-no-kvm")


def _no_kvm_file() -> Path:
    null = os.stat("/dev/null").st_rdev
    try:
        st = os.stat(NO_KVM)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == null and st.st_mode & 0o777 == 0o600:
            return NO_KVM
        NO_KVM.unlink()
    except FileNotFoundError:
        pass
    NO_KVM.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(NO_KVM, stat.S_IFCHR | 0o600, null)
    os.chown(NO_KVM, 0, 0)
    os.chmod(NO_KVM, 0o600)  # mknod honours the umask
    return NO_KVM


def sees_dev_null_as_kvm(pid: int) -> bool:
    """Whether the process views /dev/null, mode 0666, as /dev/kvm (a libvirtd of an older
    corral; our own node is the same device, but root-only)."""
    try:
        st = os.stat(f"/proc/{pid}/root/dev/kvm")
    except OSError:
        return False
    return (stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat("/dev/null").st_rdev
            and st.st_mode & 0o006 != 0)


def spawn_daemon(argv: list[str], log: Path, hide_kvm: bool = False) -> subprocess.Popen[bytes]:
    """Run a daemon in the foreground under tini, in its own session, detached from us."""
    full = [_need("tini", "tini"), "-s", "--", *argv]
    if hide_kvm and Path("/dev/kvm").exists():
        full = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _HIDE_KVM,
                "sh", str(_no_kvm_file()), *full]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def ensure_libvirtd(uri: str = "qemu:///system", log_dir: Path = Path("/var/log/libvirt"),
                    timeout: float = 30.0, hide_kvm: bool = False) -> str:
    """Start virtlogd and libvirtd if libvirt does not answer; say what was done."""
    restarted = ""
    if libvirt_works(uri):
        slow = [pid for pid in _pids("libvirtd") if sees_dev_null_as_kvm(pid)]
        if not slow:
            return "libvirtd already running (started outside corral)"
        # Started by an older corral: it re-probes QEMU on every define (11 s). Replace it;
        # QEMU processes outlive libvirtd, and the new one adopts them.
        _stop(slow, timeout)
        restarted = f"replaced libvirtd {slow} that saw /dev/null as /dev/kvm; "
    virtlogd = _need("virtlogd", "libvirt-daemon-system")
    libvirtd = _need("libvirtd", "libvirt-daemon-system")
    # A daemon that already runs in this mount namespace holds its pid-file lock, so a
    # second copy exits at once: no need to look for it first.
    spawn_daemon([virtlogd], log_dir / "corral-virtlogd.log")
    daemon = spawn_daemon([libvirtd], log_dir / "corral-libvirtd.log", hide_kvm)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if libvirt_works(uri):
            return f"{restarted}started libvirtd and virtlogd"
        if daemon.poll() is not None:
            break
        time.sleep(0.3)
    raise Unavailable(f"libvirtd did not answer at {uri} within {timeout:g} s "
                      f"(see {log_dir / 'corral-libvirtd.log'})")
