"""The tiny guest's SSH server: Debian's dropbear, with the shared libraries it needs.

``apt-get download`` fetches :data:`SSH_PACKAGES` (dropbear-bin and the libraries Debian
does not install everywhere) into the same cache as the kernel and busybox; the rest of
what dropbear links to (libc, libcrypt, libz) comes from this host, which is the same
Debian release. Libraries are found by reading each ELF file's ``DT_NEEDED`` entries (not
``ldd``, which would run the host's loader on a binary whose libraries it may not have),
searched first in the unpacked packages, then on the host.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Sequence
from pathlib import Path

from corral.errors import HostError
from corral.images.guest_debs import Progress, cached_debs, deb_globs, fetch_debs

SSH_PACKAGES: tuple[str, ...] = ("dropbear-bin", "libtomcrypt1", "libtommath1", "libgmp10")
SSH_DEB_GLOBS: tuple[str, ...] = deb_globs(SSH_PACKAGES)
SSH_BINARIES: tuple[tuple[str, str], ...] = (
    ("usr/sbin/dropbear", "usr/sbin/dropbear"),
    ("usr/bin/dropbearkey", "usr/bin/dropbearkey"),
)
LIB_DIRS: tuple[str, ...] = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
GUEST_LIB_DIR = "lib/x86_64-linux-gnu"

_DT_NEEDED = 1


def cached_ssh_packages(cache_dir: Path) -> list[Path] | None:
    return cached_debs(cache_dir, SSH_PACKAGES)


def fetch_ssh_packages(cache_dir: Path, progress: Progress) -> list[Path]:
    """The .debs of :data:`SSH_PACKAGES`: from the cache, else ``apt-get download``."""
    return fetch_debs(cache_dir, SSH_PACKAGES, progress, 25)


def elf_needed(data: bytes) -> list[str]:
    """The ``DT_NEEDED`` sonames of a 64-bit little-endian ELF file (what it links to)."""
    from corral.images.tiny import elf_section

    dynamic = elf_section(data, ".dynamic")
    strtab = elf_section(data, ".dynstr")
    if dynamic is None or strtab is None:
        return []
    needed = []
    for offset in range(0, len(dynamic) - 15, 16):
        tag, value = struct.unpack_from("<qQ", dynamic, offset)
        if tag == 0:
            break
        if tag == _DT_NEEDED:
            end = strtab.find(b"\0", value)
            needed.append(strtab[value:end].decode())
    return needed


def elf_interpreter(data: bytes) -> str | None:
    from corral.images.tiny import elf_section

    interp = elf_section(data, ".interp")
    return interp.rstrip(b"\0").decode() if interp else None


def find_lib(soname: str, trees: Sequence[Path], needed_by: str) -> Path:
    """``soname`` in the first of ``trees`` (unpacked .debs) that has it under LIB_DIRS."""
    for tree in trees:
        for sub in LIB_DIRS:
            path = tree / sub / soname
            if path.exists():
                return path.resolve()
    where = ", ".join(str(t) for t in trees)
    raise HostError(f"shared library {soname} (needed by the guest's {needed_by}) not found "
                    f"in {where}")


def install_dropbear(root: Path, debs: Sequence[Path], work: Path) -> list[str]:
    """Put dropbear, dropbearkey, their libraries and the loader into ``root``; the files added."""
    from corral.images.tiny import _unpack

    trees = []
    for deb in debs:
        tree = work / deb.name.split("_", 1)[0]
        _unpack(deb, tree)
        trees.append(tree)
    search = [*trees, Path("/")]
    added: list[str] = []
    pending: list[Path] = []
    interpreter = None
    for source, target in SSH_BINARIES:
        path = next((t / source for t in trees if (t / source).is_file()), None)
        if path is None:
            raise HostError(f"the dropbear package has no {source}")
        dest = root / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        dest.chmod(0o755)
        added.append(target)
        pending.append(dest)
        interpreter = interpreter or elf_interpreter(path.read_bytes())
    seen: set[str] = set()
    while pending:
        for soname in elf_needed(pending.pop().read_bytes()):
            if soname in seen:
                continue
            seen.add(soname)
            dest = root / GUEST_LIB_DIR / soname
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(find_lib(soname, search, "dropbear"), dest)
            dest.chmod(0o755)
            added.append(f"{GUEST_LIB_DIR}/{soname}")
            pending.append(dest)
    if interpreter:
        host_loader = Path(interpreter)
        if not host_loader.exists():
            raise HostError(f"the dynamic loader {interpreter} of dropbear is not on this host")
        dest = root / interpreter.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_loader.resolve(), dest)
        dest.chmod(0o755)
        added.append(interpreter.lstrip("/"))
    return added
