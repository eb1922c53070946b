"""Offline guest customization with libguestfs' ``virt-customize`` (hostname, files, passwords, commands).

``customize_disk(disk, spec, ...)`` works on a copy of the disk (``NAME.customize`` next to
it, ``cp --sparse``; a VM disk is a small overlay, its backing path is absolute) and puts the
copy in place only when every step succeeded: a failure leaves the disk as it was.

libguestfs boots a small appliance VM (``LIBGUESTFS_BACKEND=direct``: qemu run by
libguestfs, no libvirt), under TCG on hosts where corral uses TCG (``force_tcg``). The
appliance is built by supermin from the host's packages and needs a kernel: hosts without
one in /boot (containers, VMs booted from an outside kernel, like this project's machines)
get the kernel of the tiny guest (Debian's ``linux-image-cloud-amd64``, fetched with
``apt-get download`` into the build cache, never installed; see :func:`appliance_env`).
The appliance runs with ``--no-network``: commands run inside the guest's root, offline.

libguestfs missing or not working is reported as Unavailable with the reason; a guest it
cannot change (no OS found, a hostname or password it cannot set for this kind of guest)
as InvalidInput.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.agent import children
from corral.errors import HostError, InsufficientResources, InvalidInput, Unavailable
from corral.images import guestspec

log = logging.getLogger(__name__)

TOOL = "virt-customize"
INSTALL_HINT = ("install it with `apt-get install --no-install-recommends libguestfs-tools` "
                "(scripts/install-deps.sh)")
TIMEOUT_S = 1800.0
_STEP_RE = re.compile(r"^\[\s*\d+\.\d+\]\s+(.*)$")
# virt-customize only warns when it cannot do what it was asked: those warnings are errors here.
_HARMLESS_WARNINGS = ("random seed", "insecure md5")
_kernel_lock = threading.Lock()

Report = Callable[[int, str], None]


@dataclass
class Spec:
    """What to change, in the order it is applied."""

    hostname: str | None = None
    files: list[tuple[str, bytes, str]] = field(default_factory=list)  # (guest path, data, mode)
    passwords: list[tuple[str, str]] = field(default_factory=list)  # (user, password)
    commands: list[str] = field(default_factory=list)

    @classmethod
    def from_request(cls, body: dict[str, Any]) -> Spec:
        """From the JSON of corral.api.GuestCustomize, validated again."""
        host = body.get("hostname")
        return cls(
            hostname=guestspec.hostname(host) if host else None,
            files=[(guestspec.guest_path(f["path"]), guestspec.content(f["content"]),
                    guestspec.mode(f.get("mode") or "0644")) for f in body.get("files") or []],
            passwords=[(guestspec.user(p["user"]), guestspec.password(p["password"]))
                       for p in body.get("passwords") or []],
            commands=[guestspec.command(c) for c in body.get("commands") or []],
        )

    @property
    def steps(self) -> int:
        """Lines virt-customize prints: examine, seed, hostname, 2 per file, passwords, commands, finish."""
        return (3 + (1 if self.hostname else 0) + 2 * len(self.files)
                + (1 if self.passwords else 0) + len(self.commands))


def missing_reason() -> str | None:
    """Why libguestfs cannot run here, or None when its tools are installed."""
    for tool in (TOOL, "supermin"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed; {INSTALL_HINT}"
    return None


def build_argv(disk: Path, spec: Spec, work: Path) -> list[str]:
    """The virt-customize command line; file contents and passwords go into files in ``work``."""
    argv = [TOOL, "--format", "qcow2", "-a", str(disk), "--no-network",
            "--password-crypto", "sha512"]
    if spec.hostname:
        argv += ["--hostname", spec.hostname]
    for i, (path, data, mode) in enumerate(spec.files):
        local = work / f"file{i}"
        local.write_bytes(data)
        local.chmod(int(mode, 8))  # --upload keeps the local file's permissions
        argv += ["--mkdir", os.path.dirname(path) or "/", "--upload", f"{local}:{path}"]
    for i, (user, password) in enumerate(spec.passwords):
        secret = work / f"password{i}"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        argv += ["--password", f"{user}:file:{secret}"]
    for cmd in spec.commands:
        argv += ["--run-command", cmd]
    return argv


# --------------------------------------------------------------------------- the appliance


def _host_kernel() -> bool:
    """Is there a kernel supermin can use in /boot, with its modules?"""
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        if Path("/lib/modules", vmlinuz.name.removeprefix("vmlinuz-")).is_dir():
            return True
    return False


def appliance_kernel(build_dir: Path, report: Report) -> tuple[Path, Path, str]:
    """(vmlinuz, modules dir, version) of the tiny guest's kernel, unpacked under ``build_dir``.

    The .deb comes from the tiny image's cache (``build_dir/cache``), downloaded with
    ``apt-get download`` when it is not there: nothing is installed on the host.
    """
    from corral.images.tiny import fetch_packages

    with _kernel_lock:
        kernel_deb, _busybox = fetch_packages(build_dir / "cache", lambda _p, m: report(3, m))
        dest = build_dir / "appliance-kernel" / kernel_deb.stem
        if not (dest / ".ready").exists():
            report(4, f"unpacking {kernel_deb.name} for the libguestfs appliance")
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
            try:
                children.run(["dpkg-deb", "-x", str(kernel_deb), str(tmp)], check=True,
                             capture_output=True, timeout=300)
                kernels = sorted((tmp / "boot").glob("vmlinuz-*"))
                if not kernels:
                    raise HostError(f"{kernel_deb.name} has no boot/vmlinuz-*")
                version = kernels[-1].name.removeprefix("vmlinuz-")
                if shutil.which("depmod"):  # supermin reads modules.dep (the .deb has none)
                    children.run(["depmod", "-b", str(tmp), version], check=False,
                                 capture_output=True, timeout=300)
                os.replace(tmp, dest)
            except (OSError, subprocess.SubprocessError) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise HostError(f"cannot unpack {kernel_deb.name}: {exc}") from exc
            (dest / ".ready").touch()
    vmlinuz = sorted((dest / "boot").glob("vmlinuz-*"))[-1]
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return vmlinuz, dest / "lib" / "modules" / version, version


def appliance_env(build_dir: Path, tcg: bool, report: Report) -> dict[str, str]:
    """Environment of virt-customize: backend, TCG, appliance cache, and the kernel to use."""
    env = {
        **os.environ,
        "LIBGUESTFS_BACKEND": "direct",
        "LIBGUESTFS_CACHEDIR": str(build_dir / "guestfs"),
        "LIBGUESTFS_PROGRESS": "0",
    }
    (build_dir / "guestfs").mkdir(parents=True, exist_ok=True)
    if tcg:
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    if "SUPERMIN_KERNEL" in os.environ:
        return env  # the administrator chose
    try:
        vmlinuz, modules, version = appliance_kernel(build_dir, report)
    except (Unavailable, HostError) as exc:
        if _host_kernel():
            return env  # supermin finds the host's own kernel
        raise Unavailable(f"libguestfs is not working here: its appliance needs a kernel and "
                          f"this host has none in /boot, and {exc.message}") from exc
    env.update(SUPERMIN_KERNEL=str(vmlinuz), SUPERMIN_MODULES=str(modules),
               SUPERMIN_KERNEL_VERSION=version)
    # supermin copies the attributes of /lib/modules into the appliance: a host without any
    # kernel (this project's machines) lacks even the directory. An empty one is what every
    # Debian host has.
    with contextlib.suppress(OSError):
        Path("/lib/modules").mkdir(exist_ok=True)
    return env


# --------------------------------------------------------------------------- running it


def _classify(lines: list[str], rc: int) -> Exception:
    """The error of a failed run, from what virt-customize printed."""
    errors = [ln for ln in lines if ": error:" in ln]
    text = (errors[-1].split(": error:", 1)[1].strip() if errors
            else " / ".join(lines[-5:]) or f"exit {rc}")
    lower = text.lower()
    if "no operating systems were found" in lower or "multi-boot" in lower:
        return InvalidInput(f"libguestfs found no operating system it knows on the disk: {text}",
                            field="image")
    if any(k in lower for k in ("supermin", "appliance", "guestfs_launch", "launch failed",
                                "qemu", "kernel")):
        return Unavailable(f"libguestfs is not working here: {text}")
    return HostError(f"virt-customize failed: {text}")


def run_virt_customize(argv: list[str], env: dict[str, str], spec: Spec, report: Report,
                       timeout: float = TIMEOUT_S) -> list[str]:
    """Run it; progress from its ``[  12.3] Step`` lines; its output lines are returned."""
    try:
        proc = children.popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    except FileNotFoundError as exc:
        raise Unavailable(f"libguestfs is missing: {TOOL} is not installed; {INSTALL_HINT}") from exc
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    timer = threading.Timer(timeout, lambda: _kill(proc))
    timer.start()
    steps = 0
    try:
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            lines.append(line)
            m = _STEP_RE.match(line)
            if m:
                steps += 1
                report(5 + 90 * (steps - 1) // max(spec.steps, steps), m.group(1))
        rc = proc.wait()
    except BaseException:
        _kill(proc)
        raise
    finally:
        timer.cancel()
        proc.stdout.close()
    if time.monotonic() > deadline:
        raise HostError(f"virt-customize did not finish in {timeout:.0f} s")
    if rc != 0:
        raise _classify(lines, rc)
    warnings = [ln.split(": warning:", 1)[1].strip() for ln in lines if ": warning:" in ln]
    serious = [w for w in warnings if not any(h in w for h in _HARMLESS_WARNINGS)]
    if serious:
        raise InvalidInput("libguestfs could not do everything asked for this guest (nothing "
                           "was changed): " + "; ".join(serious), field="image")
    return lines


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def customize_disk(disk: Path, spec: Spec, build_dir: Path, *, tcg: bool, report: Report,
                   free_bytes: Callable[[], int] | None = None) -> dict[str, Any]:
    """Apply ``spec`` to the qcow2 ``disk``, atomically (see the module docstring)."""
    reason = missing_reason()
    if reason:
        raise Unavailable(f"libguestfs is missing: {reason}")
    if not disk.is_file():
        raise HostError(f"disk {disk} not found on this host")
    need = disk.stat().st_blocks * 512
    if free_bytes is not None and need > free_bytes():
        raise InsufficientResources(f"no room for a working copy of {disk.name} ({need >> 20} MiB)")
    report(2, "preparing the libguestfs appliance")
    env = appliance_env(build_dir, tcg, report)
    copy = disk.with_suffix(".customize")
    copy.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=".customize-", dir=build_dir) as tmp:
        try:
            report(4, f"copying {disk.name}")
            children.run(["cp", "--sparse=always", "--preserve=mode,ownership,timestamps",
                          str(disk), str(copy)], check=True, capture_output=True, timeout=3600)
            lines = run_virt_customize(build_argv(copy, spec, Path(tmp)), env, spec, report)
            os.replace(copy, disk)
        except subprocess.CalledProcessError as exc:
            raise HostError(f"cannot copy {disk.name}: {exc.stderr.decode(errors='replace')}") from exc
        finally:
            copy.unlink(missing_ok=True)
    steps = [m.group(1) for ln in lines if (m := _STEP_RE.match(ln))]
    return {"disk": str(disk), "steps": steps, "file_size": disk.stat().st_size}
