"""The tiny test guest: Debian's cloud kernel + busybox, booted in seconds even under TCG.

``build_tiny_image(out_dir)`` produces, without installing anything on the host and without
mounting anything:

- ``vmlinuz``: the kernel of Debian's ``linux-image-cloud-amd64`` (virtio drivers are modules);
- ``initrd.img``: a gzip'd newc cpio with busybox and the (decompressed) modules needed to see
  a virtio disk and NIC and the ACPI power button; its ``/init`` mounts ``/dev/vda`` and
  ``switch_root``'s into it, or prints ``CORRAL-TINY-ERROR: ...`` and keeps a shell;
- ``disk.qcow2``: a 64 MiB ext4 root disk (no partition table) whose ``/sbin/init`` applies a
  cloud-init NoCloud seed CD-ROM when there is one (``tiny_files/cloud-init``: host name,
  root's SSH keys, network config, runcmd; prints :data:`CLOUDINIT_MARKER`), brings up
  ``lo`` and ``eth0`` (DHCP in the background), starts an SSH server (Debian's dropbear, see
  :mod:`corral.images.tiny_ssh`) and ``acpid`` so the ACPI power button powers the guest
  off cleanly, prints :data:`BOOT_MARKER` on the console (ttyS0) and keeps a root shell there.

The guest packages are fetched with ``apt-get download`` (the host's apt sources) and kept
in ``cache_dir`` so a second build needs no network. The guest's scripts live as plain files
in ``tiny_files/`` next to this module.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from corral.errors import HostError, Unavailable
from corral.images.tiny_agent import AGENT_MODULES, fetch_agent_packages, install_guest_agent
from corral.images.tiny_ssh import fetch_ssh_packages, install_dropbear

__all__ = [
    "BOOT_MARKER",
    "CLOUDINIT_MARKER",
    "DEFAULT_CMDLINE",
    "ERROR_MARKER",
    "IP_MARKER",
    "TinyImage",
    "build_tiny_image",
]

BOOT_MARKER = "CORRAL-TINY-BOOTED"
"""Printed alone on a line on the serial console (ttyS0) when the guest is up."""
ERROR_MARKER = "CORRAL-TINY-ERROR"
"""Starts the console line of the initramfs when it cannot boot the root disk."""
IP_MARKER = "CORRAL-TINY-IP"
"""``CORRAL-TINY-IP eth0 10.0.2.15/24`` is printed on the console when DHCP binds."""
CLOUDINIT_MARKER = "CORRAL-TINY-CLOUDINIT done"
"""Printed when a cloud-init seed was applied and its runcmd has run."""

# no_timer_check: under TCG on a loaded machine the kernel's IO-APIC timer check can miss its
# ticks and panic at boot ("IO-APIC + timer doesn't work"), as seen with 30 guests booting.
DEFAULT_CMDLINE = "console=ttyS0 root=/dev/vda rw quiet no_timer_check"
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
INITRAMFS_MODULES: tuple[str, ...] = (
    "virtio_pci",  # the virtio transport of QEMU's PCI devices
    "virtio_blk",  # /dev/vda
    "virtio_net",  # eth0 (the cloud kernel has no e1000)
    "virtio_rng",  # entropy, when the guest has a virtio-rng device
    "ext4",  # the root filesystem (built in, in Debian's kernels)
    "button",  # the ACPI power button (system_powerdown, virsh shutdown)
    "evdev",  # /dev/input/event*, which busybox acpid reads the button from
    "virtio_scsi",  # the cloud-init seed CD-ROM (the cloud kernel has no AHCI for sata)
    "sr_mod",  # /dev/sr0
    "isofs",  # the seed's ISO 9660 filesystem
    "virtio_balloon",  # the balloon every corral VM has (vm set --memory-target)
)
DISK_SIZE_MIB = 64

DISK_NAME = "disk.qcow2"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"

Progress = Callable[[int, str], None]

_TOOL_PACKAGES = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "zstd": "zstd",
}
_KERNEL_DEB_GLOB = "linux-image-[0-9]*-cloud-amd64_*.deb"
_BUSYBOX_DEB_GLOB = f"{BUSYBOX_PACKAGE}_*.deb"
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")

# Root disk: (file in tiny_files/, path in the guest, mode).
_ROOTFS_FILES: tuple[tuple[str, str, int], ...] = (
    ("init", "sbin/init", 0o755),
    ("udhcpc.script", "etc/udhcpc/default.script", 0o755),
    ("acpi-power", "etc/acpi/PWRF/00000080", 0o755),
    ("profile", "etc/profile", 0o644),
    ("passwd", "etc/passwd", 0o644),
    ("group", "etc/group", 0o644),
    ("hostname", "etc/hostname", 0o644),
    ("hosts", "etc/hosts", 0o644),
    ("shells", "etc/shells", 0o644),
    ("cloud-init", "usr/lib/corral/cloud-init", 0o755),
    ("yamlflat.awk", "usr/lib/corral/yamlflat.awk", 0o644),
    ("hotplug", "usr/lib/corral/hotplug", 0o755),
)
_ROOTFS_DIRS: tuple[tuple[str, int], ...] = (
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("var/log", 0o755),
    ("var/lib/cloud", 0o755),
    ("mnt", 0o755),
    ("root", 0o700),
)


@dataclass(frozen=True)
class TinyImage:
    """A built tiny guest; boot it with ``-kernel``/``-initrd``/``-append``."""

    disk: Path  # qcow2 root disk (ext4 filesystem, no partition table)
    kernel: Path  # vmlinuz
    initrd: Path  # initramfs (cpio, gzip)
    cmdline: str  # kernel command line to boot it


@dataclass(frozen=True)
class KernelModule:
    """A module to put in the initramfs; ``path`` may be compressed."""

    name: str
    path: Path


# --------------------------------------------------------------------------- data files


def data_file(name: str) -> bytes:
    """The content of one of the guest's files shipped in ``tiny_files/``."""
    resource = resources.files("corral.images").joinpath("tiny_files").joinpath(name)
    try:
        return resource.read_bytes()
    except OSError as exc:
        raise Unavailable(
            f"corral is installed without its tiny-image file tiny_files/{name}: {exc}"
        ) from exc


# --------------------------------------------------------------------------- host tools


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        package = _TOOL_PACKAGES.get(name, name)
        raise Unavailable(
            f"building the tiny test image needs {name!r}, which is not installed "
            f"(Debian package {package!r})"
        )
    return path


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(
    args: Sequence[str],
    what: str,
    *,
    cwd: Path | None = None,
    unavailable: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a host tool quietly; a failure becomes HostError (or Unavailable) with stderr."""
    run_env = {**os.environ, "LC_ALL": "C"}  # apt's "Depends:" is translated otherwise
    try:
        return subprocess.run(list(args), check=True, capture_output=True, text=True, cwd=cwd, env=run_env)
    except FileNotFoundError as exc:
        raise Unavailable(f"{what}: {args[0]} is not installed") from exc
    except subprocess.CalledProcessError as exc:
        detail = _tail(exc.stderr) or _tail(exc.stdout) or f"exit status {exc.returncode}"
        cls = Unavailable if unavailable else HostError
        raise cls(f"{what} failed: {detail}", command=list(args)) from exc


# --------------------------------------------------------------------------- packages


def _apt_options() -> list[str]:
    # As root, apt drops to the _apt user to download, which cannot write into most
    # build directories (and warns about it): download as root directly.
    options = ["-q", "-o", "Dpkg::Use-Pty=0"]
    if os.geteuid() == 0:
        options += ["-o", "APT::Sandbox::User=root"]
    return options


def parse_kernel_dependency(apt_cache_depends_output: str) -> str | None:
    """The versioned kernel package in ``apt-cache depends linux-image-cloud-amd64``."""
    match = re.search(
        r"^\s*\|?Depends:\s*(linux-image-[0-9][^\s<>]*)\s*$",
        apt_cache_depends_output,
        re.MULTILINE,
    )
    return match.group(1) if match else None


def _apt_update(progress: Progress, percent: int, why: str) -> None:
    if os.geteuid() != 0:
        raise Unavailable(
            f"{why}; run 'apt-get update' as root (or build once as root) to build the tiny test image"
        )
    progress(percent, f"apt-get update ({why})")
    _run(
        [_tool("apt-get"), *_apt_options(), "update"],
        "apt-get update (for the tiny image's packages; no network or apt mirror reachable?)",
        unavailable=True,
    )


def _apt_cache_depends() -> tuple[str | None, str]:
    """(versioned kernel package or None, apt-cache's message)."""
    try:
        proc = _run([_tool("apt-cache"), "depends", KERNEL_METAPACKAGE], "apt-cache depends")
    except HostError as exc:  # apt-cache exits 100 for a package it does not know
        return None, exc.message
    package = parse_kernel_dependency(proc.stdout)
    return package, proc.stdout


def _resolve_kernel_package(progress: Progress) -> tuple[str, bool]:
    """(the real kernel package behind the metapackage, whether apt-get update ran)."""
    package, _ = _apt_cache_depends()
    if package:
        return package, False
    _apt_update(progress, 7, f"apt knows no package {KERNEL_METAPACKAGE!r} yet")
    package, message = _apt_cache_depends()
    if package:
        return package, True
    raise Unavailable(
        f"apt cannot resolve {KERNEL_METAPACKAGE!r} to a kernel package "
        f"(is a Debian 'main' source configured?): {_tail(message)}"
    )


def _newest(paths: Iterable[Path]) -> Path | None:
    found = sorted(paths, key=lambda p: (p.stat().st_mtime, p.name))
    return found[-1] if found else None


def cached_packages(cache_dir: Path) -> tuple[Path, Path] | None:
    """(kernel .deb, busybox .deb) already downloaded into ``cache_dir``, if both are."""
    debs = cache_dir / "debs"
    kernel = _newest(debs.glob(_KERNEL_DEB_GLOB))
    busybox = _newest(debs.glob(_BUSYBOX_DEB_GLOB))
    if kernel is None or busybox is None:
        return None
    return kernel, busybox


def _download(cache_dir: Path, kernel_package: str) -> tuple[Path, Path]:
    """``apt-get download`` into a private directory, then move the .debs into the cache."""
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        _run(
            [_tool("apt-get"), *_apt_options(), "download", kernel_package, BUSYBOX_PACKAGE],
            f"apt-get download {kernel_package} {BUSYBOX_PACKAGE} (no network or apt mirror reachable?)",
            cwd=download,
            unavailable=True,
        )
        new = sorted(download.glob("*.deb"))
        kernels = [p for p in new if p.match(_KERNEL_DEB_GLOB)]
        busyboxes = [p for p in new if p.match(_BUSYBOX_DEB_GLOB)]
        if not kernels or not busyboxes:
            raise HostError(
                "apt-get download did not produce the expected packages: "
                + (", ".join(p.name for p in new) or "nothing")
            )
        # Replace older versions in the cache, then move the new ones in atomically.
        for old in [*debs.glob(_KERNEL_DEB_GLOB), *debs.glob(_BUSYBOX_DEB_GLOB)]:
            if old.name not in {p.name for p in new}:
                old.unlink(missing_ok=True)
        for deb in new:
            os.replace(deb, debs / deb.name)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return debs / kernels[0].name, debs / busyboxes[0].name


def fetch_packages(cache_dir: Path, progress: Progress) -> tuple[Path, Path]:
    """The kernel and busybox .debs: from the cache, else ``apt-get download``."""
    cached = cached_packages(cache_dir)
    if cached is not None:
        progress(30, f"using cached packages {cached[0].name}, {cached[1].name}")
        return cached
    progress(5, f"resolving {KERNEL_METAPACKAGE}")
    kernel_package, updated = _resolve_kernel_package(progress)
    progress(10, f"downloading {kernel_package} and {BUSYBOX_PACKAGE}")
    try:
        return _download(cache_dir, kernel_package)
    except Unavailable as first:
        if updated or os.geteuid() != 0:
            raise
        # Stale package lists name versions the mirror no longer has (404): update once.
        try:
            _apt_update(progress, 15, "download failed; the package lists may be stale")
            kernel_package, _ = _resolve_kernel_package(progress)
        except Unavailable:
            raise first from None
        progress(20, f"downloading {kernel_package} and {BUSYBOX_PACKAGE}")
        return _download(cache_dir, kernel_package)


# --------------------------------------------------------------------------- kernel modules


def module_name(path: Path | str) -> str:
    """``.../virtio-rng.ko.xz`` -> ``virtio_rng`` (the kernel's canonical module name)."""
    name = Path(path).name
    for suffix in _MODULE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def find_module_files(moddir: Path) -> dict[str, Path]:
    """Module name -> file, for every module under ``moddir`` (lib/modules/VERSION)."""
    found: dict[str, Path] = {}
    for dirpath, _dirnames, filenames in os.walk(moddir):
        for filename in sorted(filenames):
            if filename.endswith(_MODULE_SUFFIXES):
                found.setdefault(module_name(filename), Path(dirpath) / filename)
    return found


def read_builtin_modules(moddir: Path) -> set[str]:
    """Names of the modules built into the kernel (``modules.builtin``)."""
    try:
        text = (moddir / "modules.builtin").read_text()
    except FileNotFoundError:
        return set()
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def read_modules_dep(moddir: Path) -> dict[str, list[str]] | None:
    """``modules.dep`` as name -> dependency names, or None when depmod never ran.

    (Debian's kernel packages do not ship modules.dep: depmod makes it at install time.)
    """
    try:
        text = (moddir / "modules.dep").read_text()
    except FileNotFoundError:
        return None
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        module, _, rest = line.partition(":")
        deps[module_name(module.strip())] = [module_name(dep) for dep in rest.split()]
    return deps


def decompress_module(path: Path) -> bytes:
    """The module's ELF bytes; ``.ko.xz``/``.ko.gz``/``.ko.zst`` are decompressed."""
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        try:
            return subprocess.run(
                [_tool("zstd"), "-q", "-d", "-c", str(path)], capture_output=True, check=True
            ).stdout
        except subprocess.CalledProcessError as exc:
            raise HostError(f"zstd could not decompress {path}: {_tail(exc.stderr)}") from exc
    return path.read_bytes()


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """The content of the ELF section named ``wanted`` (ELF32/ELF64, either byte order)."""
    if len(data) < 0x34 or data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    elf_class, elf_data = data[4], data[5]
    endian = "<" if elf_data == 1 else ">"
    if elf_class == 2:
        (shoff,) = struct.unpack_from(endian + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)
        header = endian + "IIQQQQ"
    elif elf_class == 1:
        (shoff,) = struct.unpack_from(endian + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x2E)
        header = endian + "IIIIII"
    else:
        raise ValueError(f"unknown ELF class {elf_class}")
    if shoff == 0 or shnum == 0 or shstrndx >= shnum:
        return None
    try:
        sections = [struct.unpack_from(header, data, shoff + index * shentsize) for index in range(shnum)]
    except struct.error as exc:
        raise ValueError(f"truncated ELF section table: {exc}") from exc
    _, _, _, _, str_offset, str_size = sections[shstrndx]
    names = data[str_offset : str_offset + str_size]
    for name_offset, _type, _flags, _addr, offset, size in sections:
        end = names.find(b"\0", name_offset)
        if names[name_offset : end if end >= 0 else None].decode("ascii", "replace") == wanted:
            return bytes(data[offset : offset + size])
    return None


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` of a module (like ``modinfo``): key -> values."""
    section = elf_section(data, ".modinfo")
    info: dict[str, list[str]] = {}
    for entry in (section or b"").split(b"\0"):
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def modinfo_depends(data: bytes) -> list[str]:
    """The modules a module needs, from its ``depends=`` modinfo field."""
    values = modinfo(data).get("depends", [])
    return [module_name(dep) for value in values for dep in value.split(",") if dep.strip()]


def resolve_modules(moddir: Path, wanted: Sequence[str]) -> list[KernelModule]:
    """The modules to load for ``wanted``, dependencies first, built-in ones left out.

    Dependencies come from ``modules.dep`` when there is one, else from each module's
    own ``depends=`` field (what depmod reads).
    """
    files = find_module_files(moddir)
    builtin = read_builtin_modules(moddir)
    depfile = read_modules_dep(moddir)
    order: list[KernelModule] = []
    done: set[str] = set()
    visiting: list[str] = []

    def dependencies(name: str, path: Path) -> list[str]:
        if depfile is not None and name in depfile:
            return depfile[name]
        try:
            return modinfo_depends(decompress_module(path))
        except (ValueError, OSError, lzma.LZMAError, EOFError) as exc:
            raise HostError(f"cannot read kernel module {path}: {exc}") from exc

    def visit(raw_name: str, needed_by: str | None) -> None:
        name = module_name(raw_name)
        if name in done or name in builtin:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise HostError(f"kernel module dependency cycle: {cycle}")
        path = files.get(name)
        if path is None:
            why = f" (needed by {needed_by})" if needed_by else ""
            raise HostError(f"kernel module {name}{why} is neither built in nor in {moddir}")
        visiting.append(name)
        for dep in dependencies(name, path):
            visit(dep, name)
        visiting.pop()
        done.add(name)
        order.append(KernelModule(name, path))

    for name in wanted:
        visit(name, None)
    return order


# --------------------------------------------------------------------------- initramfs


class CpioArchive:
    """A newc ("070701") cpio archive built in memory, with root-owned entries."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 0
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if not name or name in self._names:
            raise ValueError(f"bad or duplicate cpio entry {name!r}")
        self._names.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(mode) else 1,  # nlink
            0,  # mtime: reproducible archives
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check
        )
        self._out.write(b"070701" + b"".join(b"%08X" % field for field in fields))
        self._out.write(encoded)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def _parents(self, name: str) -> None:
        parts = name.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in self._names:
                self._entry(parent, stat.S_IFDIR | 0o755)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._parents(name)
        if name.strip("/") not in self._names:
            self._entry(name, stat.S_IFDIR | mode)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def names(self) -> list[str]:
        return sorted(self._names)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def build_initramfs(busybox: Path, modules: Sequence[KernelModule]) -> bytes:
    """The gzip'd cpio: busybox, ``/init`` and the decompressed modules in load order."""
    archive = CpioArchive()
    for directory in ("bin", "sbin", "dev", "proc", "sys", "tmp", "newroot", "etc"):
        archive.add_dir(directory)
    archive.add_char_device("dev/console", 5, 1)
    archive.add_char_device("dev/null", 1, 3, 0o666)
    archive.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.add_symlink("bin/sh", "busybox")
    archive.add_file("init", data_file("initramfs-init"), 0o755)
    archive.add_dir("lib/modules")
    for module in modules:
        try:
            data = decompress_module(module.path)
        except (OSError, lzma.LZMAError, EOFError) as exc:
            raise HostError(f"cannot decompress kernel module {module.path}: {exc}") from exc
        archive.add_file(f"lib/modules/{module.name}.ko", data)
    order = "".join(f"{module.name}\n" for module in modules)
    archive.add_file("lib/modules/load-order", order.encode())
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


# --------------------------------------------------------------------------- root disk


def busybox_applets(busybox: Path) -> list[str]:
    """The applets' install paths (``bin/sh``, ``sbin/acpid``, ...) of a busybox binary."""
    proc = _run([str(busybox), "--list-full"], "listing the applets of the guest's busybox")
    applets = [line.strip().strip("/") for line in proc.stdout.splitlines() if line.strip()]
    if "bin/sh" not in applets:
        raise HostError(f"{busybox} has no sh applet: not a usable busybox")
    return applets


def populate_rootfs(root: Path, busybox: Path, applets: Iterable[str]) -> None:
    """Lay out the root disk's files in ``root`` (an empty directory)."""
    for directory, mode in _ROOTFS_DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory).chmod(mode)
    (root / "var/run").symlink_to("../run")
    shutil.copyfile(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    for source, target, mode in _ROOTFS_FILES:
        path = root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data_file(source))
        path.chmod(mode)
    (root / "etc/resolv.conf").write_text("")
    for applet in applets:
        link = root / applet
        if applet == "linuxrc" or link.exists() or link.is_symlink():
            continue  # ours (sbin/init) wins over busybox's applet
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")


def make_ext4_qcow2(root: Path, raw: Path, disk: Path, size_mib: int = DISK_SIZE_MIB) -> None:
    """``mke2fs -d`` the directory into a raw ext4 file, then convert it to qcow2."""
    _run(
        [
            _tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", "tiny-root", "-m", "0",
            "-E", "root_owner=0:0", "-d", str(root), str(raw), f"{size_mib}M",
        ],
        "making the tiny image's ext4 root filesystem (mke2fs -d)",
    )  # fmt: skip
    _run(
        [_tool("qemu-img"), "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(disk)],
        "converting the tiny image's root disk to qcow2",
    )


# --------------------------------------------------------------------------- the build


def _unpack(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run([_tool("dpkg-deb"), "-x", str(deb), str(dest)], f"unpacking {deb.name}")


def _kernel_parts(tree: Path) -> tuple[Path, Path]:
    """(vmlinuz, lib/modules/VERSION) of an unpacked kernel package."""
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise HostError(f"the kernel package unpacked in {tree} has no boot/vmlinuz-*")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    for base in (tree / "lib/modules", tree / "usr/lib/modules"):
        if (base / version).is_dir():
            return kernels[-1], base / version
    raise HostError(f"the kernel package unpacked in {tree} has no modules for {version}")


def build_tiny_image(
    out_dir: Path,
    *,
    progress: Callable[[int, str], None] | None = None,
    cache_dir: Path | None = None,
    guest_agent: bool = False,
) -> TinyImage:
    """Build the tiny test guest into ``out_dir`` (``disk.qcow2``, ``vmlinuz``, ``initrd.img``).

    The downloaded .debs are kept in ``cache_dir`` (default ``out_dir/.cache``): a second
    build needs no network. Raises Unavailable when a host tool is missing or the packages
    cannot be downloaded, HostError when a build step fails. ``guest_agent``: with
    qemu-guest-agent, started at boot (:mod:`corral.images.tiny_agent`).
    """
    report: Progress = progress if progress is not None else (lambda _percent, _msg: None)
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out_dir / ".cache"
    report(0, "checking host tools")
    for tool in ("dpkg-deb", "mke2fs", "qemu-img"):
        _tool(tool)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)

    kernel_deb, busybox_deb = fetch_packages(cache, report)
    ssh_debs = fetch_ssh_packages(cache, report)
    agent_debs = fetch_agent_packages(cache, report) if guest_agent else []
    wanted = INITRAMFS_MODULES + (AGENT_MODULES if guest_agent else ())

    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp:
        work = Path(tmp)
        report(35, f"unpacking {kernel_deb.name} and {busybox_deb.name}")
        _unpack(kernel_deb, work / "kernel")
        _unpack(busybox_deb, work / "busybox")
        busybox = work / "busybox/bin/busybox"
        if not busybox.is_file():
            raise HostError(f"{busybox_deb.name} has no bin/busybox")
        vmlinuz, moddir = _kernel_parts(work / "kernel")

        report(50, "resolving kernel modules " + ", ".join(INITRAMFS_MODULES))
        modules = resolve_modules(moddir, wanted)

        report(60, "building initramfs (" + ", ".join(m.name for m in modules) + ")")
        initrd_tmp = work / INITRD_NAME
        initrd_tmp.write_bytes(build_initramfs(busybox, modules))
        kernel_tmp = work / KERNEL_NAME
        shutil.copyfile(vmlinuz, kernel_tmp)

        report(75, f"building the {DISK_SIZE_MIB} MiB ext4 root disk")
        rootfs = work / "rootfs"
        rootfs.mkdir()
        populate_rootfs(rootfs, busybox, busybox_applets(busybox))
        report(80, "adding the SSH server (dropbear) and its libraries")
        install_dropbear(rootfs, ssh_debs, work / "ssh")
        if guest_agent:
            report(85, "adding the QEMU guest agent (qemu-ga) and its libraries")
            install_guest_agent(rootfs, agent_debs, work / "agent")
        disk_tmp = work / DISK_NAME
        make_ext4_qcow2(rootfs, work / "disk.raw", disk_tmp)

        report(95, f"writing the tiny image into {out_dir}")
        image = TinyImage(
            disk=out_dir / DISK_NAME,
            kernel=out_dir / KERNEL_NAME,
            initrd=out_dir / INITRD_NAME,
            cmdline=DEFAULT_CMDLINE,
        )
        os.replace(kernel_tmp, image.kernel)
        os.replace(initrd_tmp, image.initrd)
        os.replace(disk_tmp, image.disk)
    report(100, "tiny image ready")
    return image
