"""The tiny guest's QEMU guest agent (``corral image build-tiny NAME --guest-agent``).

Opt-in: the plain tiny guest has no agent, which is what tests of "no agent answers" need.
As with the SSH server (:mod:`corral.images.tiny_ssh`), nothing is installed on the host:
``apt-get download`` fetches :data:`AGENT_PACKAGES` (qemu-guest-agent and the libraries it
links to that a hypervisor host may lack) into the tiny image's cache, ``dpkg-deb -x``
unpacks them, and the libraries come from each ELF file's ``DT_NEEDED`` entries, found in
the unpacked packages first, then on this host (the same Debian release: libc, libudev,
glib's own dependencies).

In the guest: the ``virtio_console`` module (in the initramfs: :data:`AGENT_MODULES`) gives
the agent channel's port ``/dev/vportNpM``; the guest's ``/sbin/init`` finds it by its name
under ``/sys/class/virtio-ports`` (busybox has no udev to make
``/dev/virtio-ports/org.qemu.guest_agent.0``) and starts ``qemu-ga`` on it when the binary is
there. ``guest-shutdown`` runs ``/sbin/shutdown -P +0``, which busybox lacks: a small script
(``tiny_files/qga-shutdown``) turns it into busybox's ``poweroff``/``reboot``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from corral.errors import HostError, Unavailable
from corral.images.tiny_ssh import GUEST_LIB_DIR, LIB_DIRS, elf_interpreter, elf_needed

Progress = Callable[[int, str], None]

AGENT_PACKAGES: tuple[str, ...] = ("qemu-guest-agent", "libglib2.0-0", "libnuma1", "liburing2")
AGENT_DEB_GLOBS: tuple[str, ...] = tuple(f"{p}_*.deb" for p in AGENT_PACKAGES)
AGENT_BINARY = "usr/sbin/qemu-ga"
AGENT_MODULES: tuple[str, ...] = ("virtio_console",)  # the virtio-serial port of the channel
SHUTDOWN_SCRIPT = ("qga-shutdown", "sbin/shutdown")  # tiny_files/ name, path in the guest


def cached_agent_packages(cache_dir: Path) -> list[Path] | None:
    """The newest .deb of each of :data:`AGENT_PACKAGES` in the cache, if all are there."""
    debs = cache_dir / "debs"
    found = []
    for pattern in AGENT_DEB_GLOBS:
        matches = sorted(debs.glob(pattern), key=lambda p: (p.stat().st_mtime, p.name))
        if not matches:
            return None
        found.append(matches[-1])
    return found


def fetch_agent_packages(cache_dir: Path, progress: Progress) -> list[Path]:
    """The .debs of :data:`AGENT_PACKAGES`: from the cache, else ``apt-get download`` (with
    one ``apt-get update`` when the package lists are stale)."""
    from corral.images.tiny import _apt_options, _apt_update, _run, _tool

    cached = cached_agent_packages(cache_dir)
    if cached is not None:
        return cached
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    what = f"apt-get download {' '.join(AGENT_PACKAGES)} (no network or apt mirror reachable?)"
    for attempt in (1, 2):
        download = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
        try:
            progress(27, f"downloading {', '.join(AGENT_PACKAGES)}")
            _run([_tool("apt-get"), *_apt_options(), "download", *AGENT_PACKAGES], what,
                 cwd=download, unavailable=True)
            for deb in download.glob("*.deb"):
                os.replace(deb, debs / deb.name)
        except Unavailable:
            if attempt == 2 or os.geteuid() != 0:
                raise
            _apt_update(progress, 27, "download failed; the package lists may be stale")
            continue
        finally:
            shutil.rmtree(download, ignore_errors=True)
        break
    found = cached_agent_packages(cache_dir)
    if found is None:
        raise HostError(f"apt-get download did not produce all of {', '.join(AGENT_PACKAGES)}")
    return found


def _find_lib(soname: str, trees: Sequence[Path]) -> Path:
    for tree in trees:
        for sub in LIB_DIRS:
            path = tree / sub / soname
            if path.exists():
                return path.resolve()
    where = ", ".join(str(t) for t in trees)
    raise HostError(f"shared library {soname} (needed by the guest's qemu-ga) not found in "
                    f"{where}")


def _copy(source: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    dest.chmod(mode)


def install_guest_agent(root: Path, debs: Sequence[Path], work: Path) -> list[str]:
    """Put qemu-ga, its libraries, its loader and ``/sbin/shutdown`` into ``root`` (the
    guest's root file system being built); the files added, relative to ``root``."""
    from corral.images.tiny import _unpack, data_file

    trees = []
    for deb in debs:
        tree = work / deb.name.split("_", 1)[0]
        _unpack(deb, tree)
        trees.append(tree)
    binary = next((t / AGENT_BINARY for t in trees if (t / AGENT_BINARY).is_file()), None)
    if binary is None:
        raise HostError(f"the qemu-guest-agent package has no {AGENT_BINARY}")
    _copy(binary, root / AGENT_BINARY, 0o755)
    added = [AGENT_BINARY]
    search = [*trees, Path("/")]
    pending = [root / AGENT_BINARY]
    seen: set[str] = set()
    while pending:
        for soname in elf_needed(pending.pop().read_bytes()):
            dest = root / GUEST_LIB_DIR / soname
            if soname in seen or dest.exists():  # dropbear's libc is there already
                continue
            seen.add(soname)
            _copy(_find_lib(soname, search), dest, 0o755)
            added.append(f"{GUEST_LIB_DIR}/{soname}")
            pending.append(dest)
    interpreter = elf_interpreter(binary.read_bytes())
    if interpreter and not (root / interpreter.lstrip("/")).exists():
        if not Path(interpreter).exists():
            raise HostError(f"the dynamic loader {interpreter} of qemu-ga is not on this host")
        _copy(Path(interpreter).resolve(), root / interpreter.lstrip("/"), 0o755)
        added.append(interpreter.lstrip("/"))
    name, target = SHUTDOWN_SCRIPT
    (root / target).parent.mkdir(parents=True, exist_ok=True)
    (root / target).unlink(missing_ok=True)  # busybox may have linked an applet there
    (root / target).write_bytes(data_file(name))
    (root / target).chmod(0o755)
    added.append(target)
    return added
