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

import shutil
from collections.abc import Sequence
from pathlib import Path

from corral.errors import HostError
from corral.images.guest_debs import Progress, fetch_debs
from corral.images.tiny_ssh import GUEST_LIB_DIR, elf_interpreter, elf_needed, find_lib

AGENT_PACKAGES: tuple[str, ...] = ("qemu-guest-agent", "libglib2.0-0", "libnuma1", "liburing2")
AGENT_BINARY = "usr/sbin/qemu-ga"
AGENT_MODULES: tuple[str, ...] = ("virtio_console",)  # the virtio-serial port of the channel
SHUTDOWN_SCRIPT = ("qga-shutdown", "sbin/shutdown")  # tiny_files/ name, path in the guest


def fetch_agent_packages(cache_dir: Path, progress: Progress) -> list[Path]:
    """The .debs of :data:`AGENT_PACKAGES`: from the cache, else ``apt-get download``."""
    return fetch_debs(cache_dir, AGENT_PACKAGES, progress, 27)


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
            _copy(find_lib(soname, search, "qemu-ga"), dest, 0o755)
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
