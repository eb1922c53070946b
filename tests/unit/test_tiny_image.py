"""Unit tests of the tiny test guest builder: no network, no apt, no QEMU."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.errors import HostError, Unavailable
from corral.images import tiny
from corral.images.tiny import (
    BOOT_MARKER,
    ERROR_MARKER,
    CpioArchive,
    KernelModule,
    TinyImage,
    build_initramfs,
    build_tiny_image,
    data_file,
    modinfo,
    modinfo_depends,
    module_name,
    parse_kernel_dependency,
    populate_rootfs,
    resolve_modules,
)

SCRIPTS = ("init", "initramfs-init", "udhcpc.script", "acpi-power", "cloud-init", "hotplug")


# --------------------------------------------------------------------------- helpers


def fake_module(modinfo_fields: dict[str, str], *, payload: bytes = b"") -> bytes:
    """A minimal ELF64 little-endian relocatable with a .modinfo section."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in modinfo_fields.items())
    shstrtab = b"\0.modinfo\0.shstrtab\0.text\0"
    text = payload
    body_offset = 64
    info_offset = body_offset
    shstr_offset = info_offset + len(info)
    text_offset = shstr_offset + len(shstrtab)
    shoff = text_offset + len(text)
    shoff += -shoff % 8
    header = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 4, 2)
    body = info + shstrtab + text
    body += b"\0" * (shoff - body_offset - len(body))

    def section(name: int, kind: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    sections = (
        section(0, 0, 0, 0)
        + section(1, 1, info_offset, len(info))
        + section(10, 3, shstr_offset, len(shstrtab))
        + section(20, 1, text_offset, len(text))
    )
    return header + body + sections


def read_newc(archive: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)) of a newc cpio archive."""
    entries: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        assert archive[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmajor, rminor, namesize = (
            fields[1], fields[6], fields[9], fields[10], fields[11],
        )  # fmt: skip
        pos += 110
        name = archive[pos : pos + namesize - 1].decode()
        assert archive[pos + namesize - 1] == 0
        pos += namesize
        pos += -pos % 4
        data = archive[pos : pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return entries
        assert name not in entries
        entries[name] = (mode, data, (rmajor, rminor))


def make_moddir(root: Path, deps: dict[str, list[str]], *, builtin: Sequence[str] = ()) -> Path:
    """lib/modules/VERSION with fake .ko files whose modinfo carry ``deps``."""
    moddir = root / "lib/modules/6.1.0-test"
    for name, needs in deps.items():
        sub = moddir / "kernel/drivers" / name[:3]
        sub.mkdir(parents=True, exist_ok=True)
        filename = "virtio-rng" if name == "virtio_rng" else name  # as in Debian's kernel
        (sub / f"{filename}.ko").write_bytes(
            fake_module({"license": "GPL", "depends": ",".join(needs), "name": name})
        )
    moddir.mkdir(parents=True, exist_ok=True)
    (moddir / "modules.builtin").write_text("".join(f"kernel/fs/{name}/{name}.ko\n" for name in builtin))
    return moddir


VIRTIO_DEPS = {
    "virtio": [],
    "virtio_ring": [],
    "virtio_pci_modern_dev": [],
    "virtio_pci_legacy_dev": [],
    "virtio_pci": ["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_ring"],
    "virtio_blk": ["virtio", "virtio_ring"],
    "failover": [],
    "net_failover": ["failover"],
    "virtio_net": ["net_failover", "virtio", "virtio_ring"],
    "virtio_rng": ["virtio", "virtio_ring"],
    "button": [],
    "evdev": [],
    "scsi_common": [],
    "scsi_mod": ["scsi_common"],
    "virtio_scsi": ["scsi_mod", "virtio", "virtio_ring"],
    "cdrom": [],
    "sr_mod": ["cdrom", "scsi_mod", "scsi_common"],
    "isofs": [],
    "virtio_balloon": ["virtio", "virtio_ring"],
}


def assert_deps_first(order: list[str], deps: dict[str, list[str]]) -> None:
    for index, name in enumerate(order):
        for dep in deps.get(name, []):
            if dep in deps:
                assert dep in order[:index], f"{dep} must load before {name}: {order}"


# --------------------------------------------------------------------------- guest scripts


def test_public_api_shape() -> None:
    assert BOOT_MARKER == "CORRAL-TINY-BOOTED"
    image = TinyImage(Path("d"), Path("k"), Path("i"), "console=ttyS0")
    with pytest.raises(AttributeError):
        image.disk = Path("x")  # type: ignore[misc]
    assert "console=ttyS0" in tiny.DEFAULT_CMDLINE
    assert "root=/dev/vda" in tiny.DEFAULT_CMDLINE


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_shell_with_valid_syntax(name: str) -> None:
    text = data_file(name).decode()
    assert text.startswith("#!/bin/sh\n") or text.startswith("#!/bin/busybox sh\n")
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh on this host")
    proc = subprocess.run([sh, "-n"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_root_init_script() -> None:
    text = data_file("init").decode()
    assert f'"{BOOT_MARKER}" >/dev/console' in text
    for needed in (
        "mount -t proc",
        "mount -t sysfs",
        "mount -t devtmpfs",
        "hostname",
        "ip link set lo up",
        "ip link set eth0 up",
        "udhcpc -f -i eth0 -s /etc/udhcpc/default.script",
        "acpid -c /etc/acpi",
        "setsid cttyhack sh",
        "trap 'shutdown_now poweroff' USR2",
        "poweroff",
    ):
        assert needed in text, needed
    # acpid must be running before the marker says the guest is up.
    assert text.index("acpid -c") < text.index(BOOT_MARKER)
    # The console shell is respawned.
    assert "while :; do" in text[text.index(BOOT_MARKER) :]


def test_initramfs_init_script() -> None:
    text = data_file("initramfs-init").decode()
    for needed in (
        "mount -t proc",
        "mount -t sysfs",
        "mount -t devtmpfs",
        "/lib/modules/load-order",
        "insmod",
        "root=/dev/vda",
        "rootfstype=ext4",
        "switch_root /newroot",
        f"{ERROR_MARKER}: $*",
        "root disk $root not found",
        "setsid cttyhack sh",
    ):
        assert needed in text, needed


def test_acpi_handler_and_hostname() -> None:
    assert "kill -USR2 1" in data_file("acpi-power").decode()
    assert data_file("hostname").decode().strip() == "tiny"
    assert "root:x:0:0:" in data_file("passwd").decode()
    script = data_file("udhcpc.script").decode()
    for needed in ("bound|renew", "ip -4 addr add", "route add default", tiny.IP_MARKER):
        assert needed in script


@pytest.mark.parametrize(("subsystem", "attr", "before", "after"), [
    ("cpu", "online", "0", "1"), ("memory", "state", "offline", "online"),
    ("cpu", "online", "1", "1"), ("memory", "state", "online", "online"),
])
def test_hotplug_rules_online_added_cpus_and_memory(tmp_path: Path, subsystem: str, attr: str,
                                                    before: str, after: str) -> None:
    """What udev does elsewhere: an added vCPU or memory block comes online (once)."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh on this host")
    devpath = f"/devices/system/{subsystem}/{subsystem}9"
    (tmp_path / devpath.lstrip("/")).mkdir(parents=True)
    node = tmp_path / devpath.lstrip("/") / attr
    node.write_text(before + "\n")
    env = {"PATH": os.environ["PATH"], "SYSFS": str(tmp_path), "SUBSYSTEM": subsystem,
           "DEVPATH": devpath}
    for action in ("remove", "add"):
        proc = subprocess.run([sh, "-c", data_file("hotplug").decode()], capture_output=True,
                              env={**env, "ACTION": action}, timeout=10, check=False)
        assert proc.returncode == 0, proc.stderr
    assert node.read_text().strip() == after
    assert "uevent /usr/lib/corral/hotplug" in data_file("init").decode()


def test_missing_data_file_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="no-such-file"):
        data_file("no-such-file")


# --------------------------------------------------------------------------- packages


def test_parse_kernel_dependency() -> None:
    out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n  Recommends: <something>\n"
    assert parse_kernel_dependency(out) == "linux-image-6.1.0-56-cloud-amd64"
    assert parse_kernel_dependency("linux-image-cloud-amd64\n") is None
    assert parse_kernel_dependency("  Depends: linux-base\n") is None


def fake_tools(bindir: Path, scripts: dict[str, str]) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        path = bindir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)


def test_download_failure_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    fake_tools(
        bindir,
        {
            "apt-cache": "echo linux-image-cloud-amd64\necho '  Depends: linux-image-6.1.0-9-cloud-amd64'\n",
            "apt-get": "echo 'E: Failed to fetch http://deb.debian.org/x  Temporary failure "
            "resolving deb.debian.org' >&2\nexit 100\n",
            "dpkg-deb": "exit 1\n",
            "mke2fs": "exit 1\n",
            "qemu-img": "exit 1\n",
        },
    )
    monkeypatch.setenv("PATH", str(bindir))
    seen: list[tuple[int, str]] = []
    with pytest.raises(Unavailable) as info:
        build_tiny_image(tmp_path / "out", progress=lambda p, m: seen.append((p, m)))
    assert "Temporary failure resolving" in info.value.message
    assert "apt-get download" in info.value.message
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert any("linux-image-6.1.0-9-cloud-amd64" in m for _, m in seen)
    # Nothing half-downloaded is left in the cache.
    assert not list((tmp_path / "out/.cache").glob(".download-*"))


def test_missing_tool_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which

    def which(name: str, mode: int = os.F_OK | os.X_OK, path: str | None = None) -> str | None:
        return None if name == "mke2fs" else real_which(name, mode, path)

    monkeypatch.setattr(shutil, "which", which)
    with pytest.raises(Unavailable, match="e2fsprogs"):
        build_tiny_image(tmp_path / "out")


def test_cached_packages_need_no_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debs = tmp_path / "cache/debs"
    debs.mkdir(parents=True)
    kernel = debs / "linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb"
    busybox = debs / "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
    (debs / "linux-image-cloud-amd64_6.1.192-2_amd64.deb").write_bytes(b"meta")
    kernel.write_bytes(b"k")
    busybox.write_bytes(b"b")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    def no_apt(name: str) -> str:
        raise AssertionError(f"{name} must not be needed")

    monkeypatch.setattr(tiny, "_tool", no_apt)
    seen: list[str] = []
    assert tiny.fetch_packages(tmp_path / "cache", lambda _p, m: seen.append(m)) == (
        kernel,
        busybox,
    )
    assert "cached" in seen[0]


FAKE_APT_CACHE = """
echo linux-image-cloud-amd64
if [ -f "$MARK" ]; then v=100; else v=99; fi
echo "  Depends: linux-image-6.1.0-$v-cloud-amd64"
"""
FAKE_APT_GET = """
case " $* " in
    *" update "*) : >"$MARK"; exit 0 ;;
    *" download "*)
        if [ ! -f "$MARK" ]; then
            echo "E: Failed to fetch http://deb.debian.org/pool/x.deb  404  Not Found" >&2
            exit 100
        fi
        for p in "$@"; do
            case "$p" in linux-image-*|busybox-static) echo "$p" >"${p}_1.0_amd64.deb" ;; esac
        done
        exit 0 ;;
esac
exit 1
"""


def test_stale_package_lists_are_updated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(tmp_path / "bin", {"apt-cache": FAKE_APT_CACHE, "apt-get": FAKE_APT_GET})
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("MARK", str(tmp_path / "updated"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    old = cache / "debs/busybox-static_0.9_amd64.deb"
    old.write_text("old")
    seen: list[str] = []
    kernel, busybox = tiny.fetch_packages(cache, lambda _p, m: seen.append(m))
    assert kernel == cache / "debs/linux-image-6.1.0-100-cloud-amd64_1.0_amd64.deb"
    assert busybox == cache / "debs/busybox-static_1.0_amd64.deb"
    assert kernel.read_text().strip() == "linux-image-6.1.0-100-cloud-amd64"
    assert not old.exists()
    assert sum("apt-get update" in m for m in seen) == 1
    assert not list(cache.glob(".download-*"))
    # The second time, the cache answers.
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert tiny.fetch_packages(cache, lambda _p, _m: None) == (kernel, busybox)


def test_unknown_metapackage_needs_root_for_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(tmp_path / "bin", {"apt-cache": "echo 'E: No packages found' >&2; exit 100\n"})
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(Unavailable, match="apt-get update"):
        tiny.fetch_packages(tmp_path / "cache", lambda _p, _m: None)


# --------------------------------------------------------------------------- kernel modules


def test_module_name() -> None:
    assert module_name("kernel/drivers/virtio/virtio_pci.ko") == "virtio_pci"
    assert module_name("virtio-rng.ko.xz") == "virtio_rng"
    assert module_name(Path("/x/evdev.ko.zst")) == "evdev"
    assert module_name("crc32c-intel.ko.gz") == "crc32c_intel"


def test_modinfo_of_fake_elf() -> None:
    data = fake_module({"license": "GPL", "depends": "virtio,virtio_ring", "alias": "a"})
    info = modinfo(data)
    assert info["license"] == ["GPL"]
    assert modinfo_depends(data) == ["virtio", "virtio_ring"]
    assert modinfo_depends(fake_module({"depends": ""})) == []
    with pytest.raises(ValueError):
        modinfo(b"not an elf file at all, definitely not" * 2)


def test_resolve_modules_from_modinfo(tmp_path: Path) -> None:
    moddir = make_moddir(tmp_path, VIRTIO_DEPS, builtin=["ext4", "jbd2"])
    assert not (moddir / "modules.dep").exists()
    modules = resolve_modules(moddir, tiny.INITRAMFS_MODULES)
    order = [m.name for m in modules]
    assert set(order) == set(VIRTIO_DEPS)  # ext4 is built in: left out
    assert len(order) == len(set(order))
    assert_deps_first(order, VIRTIO_DEPS)
    assert all(m.path.is_file() for m in modules)
    rng = next(m for m in modules if m.name == "virtio_rng")
    assert rng.path.name == "virtio-rng.ko"


def test_resolve_modules_from_modules_dep(tmp_path: Path) -> None:
    moddir = make_moddir(tmp_path, {"a": [], "b": [], "c": [], "d": []})
    # modules.dep wins over modinfo (which says nobody depends on anybody here).
    (moddir / "modules.dep").write_text(
        "kernel/drivers/a/a.ko: kernel/drivers/b/b.ko kernel/drivers/c/c.ko\n"
        "kernel/drivers/b/b.ko: kernel/drivers/c/c.ko\n"
        "kernel/drivers/c/c.ko:\n"
        "kernel/drivers/d/d.ko:\n"
    )
    order = [m.name for m in resolve_modules(moddir, ["a", "d"])]
    assert order == ["c", "b", "a", "d"]


def test_resolve_modules_errors(tmp_path: Path) -> None:
    moddir = make_moddir(tmp_path, {"a": ["b"], "b": ["a"], "c": ["gone"]})
    with pytest.raises(HostError, match="cycle"):
        resolve_modules(moddir, ["a"])
    with pytest.raises(HostError, match=r"gone \(needed by c\)"):
        resolve_modules(moddir, ["c"])
    with pytest.raises(HostError, match="nowhere"):
        resolve_modules(moddir, ["nowhere"])


def test_compressed_modules_are_decompressed(tmp_path: Path) -> None:
    moddir = tmp_path / "lib/modules/6.1.0-test/kernel"
    moddir.mkdir(parents=True)
    plain = {
        "xzmod": fake_module({"depends": "gzmod"}, payload=b"XZ-PAYLOAD"),
        "gzmod": fake_module({"depends": ""}, payload=b"GZ-PAYLOAD"),
    }
    (moddir / "xzmod.ko.xz").write_bytes(lzma.compress(plain["xzmod"]))
    (moddir / "gzmod.ko.gz").write_bytes(gzip.compress(plain["gzmod"]))
    wanted = ["xzmod"]
    zstd = shutil.which("zstd")
    if zstd is not None:
        plain["zstmod"] = fake_module({"depends": "xzmod"}, payload=b"ZST-PAYLOAD")
        (moddir / "zstmod.ko").write_bytes(plain["zstmod"])
        subprocess.run([zstd, "-q", "--rm", str(moddir / "zstmod.ko")], check=True)
        wanted = ["zstmod"]
    modules = resolve_modules(moddir.parent, wanted)
    assert [m.name for m in modules][:2] == ["gzmod", "xzmod"]
    for module in modules:
        assert tiny.decompress_module(module.path) == plain[module.name]

    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF-busybox")
    entries = read_newc(gzip.decompress(build_initramfs(busybox, modules)))
    for module in modules:
        assert entries[f"lib/modules/{module.name}.ko"][1] == plain[module.name]
    order = entries["lib/modules/load-order"][1].decode().split()
    assert order == [m.name for m in modules]


# --------------------------------------------------------------------------- archives, rootfs


def test_cpio_archive_roundtrip() -> None:
    archive = CpioArchive()
    archive.add_dir("etc")
    archive.add_file("etc/deep/file", b"abc", 0o640)
    archive.add_symlink("bin/sh", "busybox")
    archive.add_char_device("dev/console", 5, 1)
    entries = read_newc(archive.finish())
    assert set(entries) == {"etc", "etc/deep", "etc/deep/file", "bin", "bin/sh", "dev",
                            "dev/console"}  # fmt: skip
    mode, data, _ = entries["etc/deep/file"]
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o640 and data == b"abc"
    mode, data, _ = entries["bin/sh"]
    assert stat.S_ISLNK(mode) and data == b"busybox"
    mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5, 1)
    assert stat.S_ISDIR(entries["etc/deep"][0])
    with pytest.raises(ValueError):
        archive.add_file("etc", b"")


def test_initramfs_layout(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF-busybox")
    ko = tmp_path / "virtio.ko"
    ko.write_bytes(fake_module({"depends": ""}))
    image = build_initramfs(busybox, [KernelModule("virtio", ko)])
    assert image[:2] == b"\x1f\x8b"  # gzip
    entries = read_newc(gzip.decompress(image))
    mode, data, _ = entries["init"]
    assert stat.S_IMODE(mode) == 0o755 and data == data_file("initramfs-init")
    assert entries["bin/busybox"][1] == busybox.read_bytes()
    assert stat.S_IMODE(entries["bin/busybox"][0]) == 0o755
    assert entries["bin/sh"][1] == b"busybox"
    assert entries["dev/console"][2] == (5, 1)
    assert entries["lib/modules/load-order"][1] == b"virtio\n"
    for directory in ("proc", "sys", "dev", "newroot", "tmp"):
        assert stat.S_ISDIR(entries[directory][0])
    # Reproducible: same inputs, same bytes.
    assert build_initramfs(busybox, [KernelModule("virtio", ko)]) == image


def test_populate_rootfs(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF-busybox")
    root = tmp_path / "root"
    root.mkdir()
    applets = ["bin/sh", "sbin/init", "sbin/acpid", "sbin/udhcpc", "usr/bin/env", "linuxrc"]
    populate_rootfs(root, busybox, applets)
    init = root / "sbin/init"
    assert not init.is_symlink() and init.read_bytes() == data_file("init")
    assert os.access(init, os.X_OK)
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert os.readlink(root / "sbin/acpid") == "/bin/busybox"
    assert os.readlink(root / "usr/bin/env") == "/bin/busybox"
    assert not (root / "linuxrc").exists()
    assert os.access(root / "etc/acpi/PWRF/00000080", os.X_OK)
    assert os.access(root / "etc/udhcpc/default.script", os.X_OK)
    assert (root / "etc/hostname").read_text().strip() == "tiny"
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert os.readlink(root / "var/run") == "../run"
    for directory in ("proc", "sys", "dev", "run", "root"):
        assert (root / directory).is_dir()
