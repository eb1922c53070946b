"""Image import on a host: a URL or a local file, in any of qcow2/raw/vmdk/vdi/iso, into the store.

The steps of ``import_image`` (an agent job, see corral.agent.jobs), each reported as progress:

1. remove what an interrupted earlier attempt left (``NAME.download``, ``NAME.part``);
2. an http(s) URL is downloaded into ``images/NAME.download`` (corral.agent.download:
   resumed, sparse; only from addresses corral.safeurls permits); a local file is read in
   place, only below an import directory (corral.safepaths: checked after symlinks, opened
   once and then read through that open file). The SHA-256 is computed (while the
   download streams) only when a checksum is given;
3. the checksum, when given, is compared;
4. the format is found (``qemu-img info``; an ISO 9660 image is a raw file with ``CD001`` at
   byte 32769) and checked against the one asked for; what would make qemu read other host
   files (backing files, external data files, VMDK extents elsewhere) is refused, and so is
   a "raw" file that is no disk image (an HTML page, an archive, a size not in whole sectors);
5. the free space is checked against ``qemu-img measure``;
6. a qcow2 download is kept as it is (after ``qemu-img check``); an ISO is kept as it is, as
   ``images/NAME.iso`` (format "iso": a CD-ROM for installs); anything else is converted to
   ``images/NAME.qcow2`` with ``qemu-img convert -p`` (its progress is parsed).

Any failure removes every file of the attempt: nothing half-made stays in the store. What
lands in the store is mode 0640 (corral.agent.storage.IMAGE_MODE): not for every user.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from corral.agent import children
from corral.agent.download import FREE_MARGIN, download
from corral.agent.storage import Storage, private_file, qemu_img_info
from corral.errors import Conflict, HostError, InsufficientResources, InvalidInput
from corral.safepaths import PathPolicy
from corral.safeurls import UrlPolicy
from corral.validation import validate_name

FORMATS = ("auto", "qcow2", "raw", "vmdk", "vdi", "iso")
CONVERTIBLE = ("qcow2", "raw", "vmdk", "vdi")
CHECKSUM_RE = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
ISO_MAGIC_OFFSET = 32769  # sector 16 (2048-byte sectors) + 1: "CD001" of the volume descriptor
_PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

Report = Callable[[int, str], None]  # (percent, message); raises to cancel

# First bytes of files that are often served by mistake instead of a disk image.
_NOT_IMAGES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "a gzip archive (decompress it first)"),
    (b"\xfd7zXZ\x00", "an xz archive (decompress it first)"),
    (b"(\xb5/\xfd", "a zstd archive (decompress it first)"),
    (b"BZh", "a bzip2 archive (decompress it first)"),
    (b"PK\x03\x04", "a zip archive (extract the image first)"),
    (b"<!DOCTYPE", "an HTML page"),
    (b"<!doctype", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"<HTML", "an HTML page"),
    (b"<?xml", "an XML document (an OVF descriptor?)"),
)


def is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def parse_checksum(value: str | None) -> str | None:
    """``sha256:HEX`` -> lower-case HEX; None stays None."""
    if value is None:
        return None
    m = CHECKSUM_RE.match(value.strip())
    if m is None:
        raise InvalidInput("checksum must be sha256: followed by 64 hex digits", field="checksum")
    return m.group(1).lower()


def is_iso9660(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(ISO_MAGIC_OFFSET)
        return f.read(5) == b"CD001"


def not_an_image_reason(path: Path, size: int) -> str | None:
    """Why a file probed as "raw" is no disk image, or None when it may well be one."""
    if size == 0:
        return "it is empty"
    with path.open("rb") as f:
        head = f.read(16)
    for magic, what in _NOT_IMAGES:
        if head.startswith(magic):
            return f"it is {what}"
    if size % 512:
        return f"its size ({size} bytes) is not a whole number of 512-byte sectors"
    return None


def detect_format(path: Path, wanted: str) -> tuple[str, dict[str, Any]]:
    """The image format of ``path`` ("iso" for ISO 9660), checked against ``wanted``."""
    try:
        info = qemu_img_info(path)
    except HostError:
        with path.open("rb") as f:
            descriptor = f.read(21) == b"# Disk DescriptorFile"
        if descriptor:  # read through its open file (safepaths): its extents are elsewhere
            raise InvalidInput("the source VMDK has an extent in another file; import a "
                               "monolithic VMDK", field="source") from None
        raise
    fmt = str(info.get("format"))
    size = path.stat().st_size
    if fmt == "raw" and wanted in ("auto", "iso") and is_iso9660(path):
        fmt = "iso"
    if wanted == "iso" and fmt != "iso":
        raise InvalidInput(f"the source is not an ISO 9660 image (it probes as {fmt})",
                           field="format")
    if fmt not in (*CONVERTIBLE, "iso"):
        raise InvalidInput(f"the source is a {fmt} image; corral imports qcow2, raw, vmdk, vdi "
                           "and iso", field="source")
    if wanted not in ("auto", fmt):
        raise InvalidInput(f"the source is {fmt}, not {wanted}", field="format")
    if fmt == "raw" and wanted == "auto":
        why = not_an_image_reason(path, size)
        if why:
            raise InvalidInput(f"the source is not a disk image: {why}", field="source")
    _refuse_external_files(path, fmt, info)
    return fmt, info


def _refuse_external_files(path: Path, fmt: str, info: dict[str, Any]) -> None:
    """Images that would make qemu open other files of this host are refused."""
    if info.get("backing-filename"):
        raise InvalidInput("the source has a backing file; import a standalone image "
                           "(qemu-img convert it first)", field="source")
    data = (info.get("format-specific") or {}).get("data") or {}
    if fmt == "qcow2" and data.get("data-file"):
        raise InvalidInput("the source qcow2 keeps its data in an external file", field="source")
    if fmt == "vmdk":
        for extent in data.get("extents") or []:
            name = str(extent.get("filename", ""))
            if (path.parent / name).resolve() != path.resolve():
                raise InvalidInput(f"the source VMDK has an extent in another file ({name}); "
                                   "import a monolithic VMDK", field="source")


def run_qemu_img(argv: list[str], what: str, report: Callable[[float], None]) -> None:
    """Run ``qemu-img ... -p``, calling ``report(percent)`` as it progresses.

    ``report`` may raise (a cancelled job): qemu-img is then killed and the error goes on.
    """
    try:
        proc = children.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    except FileNotFoundError as exc:
        raise HostError(f"{what}: qemu-img is not installed (apt-get install qemu-utils)") from exc
    assert proc.stdout is not None
    said: list[bytes] = []  # what is not progress: the error message, if any
    try:
        buf = b""
        while data := os.read(proc.stdout.fileno(), 4096):
            buf += data
            *pieces, buf = re.split(rb"[\r\n]", buf)
            percent = None
            for piece in pieces:
                m = _PROGRESS_RE.search(piece)
                if m:
                    percent = float(m.group(1))
                elif piece.strip():
                    said = [*said[-20:], piece.strip()]
            if percent is not None:
                report(percent)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    if rc != 0:
        text = b"\n".join([*said, buf.strip()]).decode(errors="replace").strip()
        raise HostError(f"{what}: {text[-500:] or f'qemu-img exit {rc}'}")


def _measure(path: Path, fmt: str) -> int:
    """Bytes a qcow2 conversion of ``path`` needs (``qemu-img measure``)."""
    try:
        out = children.run(["qemu-img", "measure", "--output=json", "-f", fmt, "-O", "qcow2",
                            str(path)], capture_output=True, text=True, timeout=300, check=True)
        return int(json.loads(out.stdout)["required"])
    except (subprocess.SubprocessError, ValueError, KeyError, OSError):
        return path.stat().st_blocks * 512  # at worst what the file holds now


def _sha256_file(path: Path, report: Report, span: tuple[int, int]) -> str:
    h = hashlib.sha256()
    size = max(path.stat().st_size, 1)
    done = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            done += n
            if done % (64 << 20) < n:
                report(span[0] + (span[1] - span[0]) * done // size, "computing the SHA-256")
    return h.hexdigest()


def _check_space(storage: Storage, need: int, what: str) -> None:
    free = storage.free_bytes()
    if need > free - FREE_MARGIN:
        raise InsufficientResources(
            f"{what} needs {need >> 20} MiB, only {max(0, free - FREE_MARGIN) >> 20} MiB free "
            "in the image store")


class Importer:
    """One import into ``storage`` (see the module docstring)."""

    def __init__(self, storage: Storage, name: str, source: str, fmt: str = "auto",
                 checksum: str | None = None, *, paths: PathPolicy | None = None,
                 urls: UrlPolicy | None = None) -> None:
        """``paths``/``urls``: where a local source may be and which addresses a URL may
        reach (the agent's settings); by default no local file and no host address."""
        self.storage = storage
        self.name = validate_name(name, "image")
        if fmt not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
        self.source = source
        self.fmt = fmt
        self.sha256 = parse_checksum(checksum)
        self.url = is_url(source)
        if not self.url and not Path(source).is_absolute():
            raise InvalidInput("source must be an http(s) URL or an absolute path", field="source")
        self.paths = paths or PathPolicy()
        self.urls = urls or UrlPolicy()
        if self.url:
            self.urls.check_url(source)  # refused at once, before the job
        else:
            self.paths.check_read(source, "source")
        self.resumes = 0  # times a dropped download went on (resumed or restarted)
        self.download = storage.images / f"{self.name}.download"
        self.part = storage.images / f"{self.name}.part"

    def cleanup(self) -> None:
        for path in (self.download, self.part):
            path.unlink(missing_ok=True)

    def run(self, report: Report) -> dict[str, Any]:
        users = self.storage.disk_in_use_by(self.name)
        if users:
            raise Conflict(f"image {self.name} exists on this host and VM disks use it: "
                           f"{', '.join(users)}")
        self.storage.delete_image(self.name)  # leftovers of an interrupted attempt
        self.cleanup()
        try:
            with contextlib.ExitStack() as stack:
                pinned = None if self.url else stack.enter_context(
                    self.paths.opened(self.source, "source"))
                return self._run(report, pinned)
        except BaseException:
            self.storage.delete_image(self.name)
            self.cleanup()
            raise

    def _run(self, report: Report, pinned: Path | None) -> dict[str, Any]:
        """``pinned``: the local source, opened (corral.safepaths.PathPolicy.opened)."""
        digest: str | None = None
        if pinned is None:
            src, digest = self._download(report)
            end = 60
        else:
            src = pinned
            end = 0
            if self.sha256 is not None:
                digest, end = _sha256_file(src, report, (0, 30)), 30
        if self.sha256 is not None and digest != self.sha256:
            raise InvalidInput(f"checksum mismatch: expected sha256:{self.sha256}, got "
                               f"sha256:{digest}", field="checksum")
        report(end, "checking the image format")
        fmt, info = detect_format(src, self.fmt)
        digest_note = f", sha256:{digest}" if digest else ""
        if fmt == "iso":
            self._keep(src, self.storage.images / f"{self.name}.iso", "ISO", report, end)
        elif fmt == "qcow2" and self.url:
            self._check_qcow2(src)
            os.replace(src, self.storage.image_path(self.name))
        else:
            _check_space(self.storage, _measure(src, fmt), f"converting the {fmt} image")
            what = f"converting {fmt} to qcow2"
            report(end, what)
            private_file(self.part)
            run_qemu_img(
                ["qemu-img", "convert", "-p", "-f", fmt, "-O", "qcow2", str(src), str(self.part)],
                what, lambda pct: report(end + int((98 - end) * pct / 100), f"{what} ({pct:.0f}%)"))
            os.replace(self.part, self.storage.image_path(self.name))
        self.storage.seal(self.name)
        self.download.unlink(missing_ok=True)
        described = self.storage.describe(self.name).model_dump()
        report(99, f"imported {self.name} ({fmt}, {described['virtual_size'] >> 20} MiB"
                   f"{digest_note})")
        return {**described, "source_format": fmt, "sha256": digest, "resumes": self.resumes,
                "virtual_size_source": int(info.get("virtual-size") or 0)}

    def _download(self, report: Report) -> tuple[Path, str | None]:
        span = 60  # the download is 0-60 %, what follows 60-99 %

        def progress(done: int, total: int | None, message: str) -> None:
            report(span * done // total if total else 0, message)

        got = download(self.source, self.download, progress=progress,
                       free_bytes=self.storage.free_bytes, sha256=self.sha256 is not None,
                       guard=self.urls)
        self.resumes = got.resumes + got.restarts
        note = f" (resumed {got.resumes}x)" if got.resumes else ""
        report(span, f"downloaded {got.size >> 20} MiB{note}")
        return self.download, got.sha256

    def _check_qcow2(self, path: Path) -> None:
        proc = subprocess.run(["qemu-img", "check", "-f", "qcow2", str(path)],
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode not in (0, 3):  # 3: leaked clusters only, harmless
            raise InvalidInput(f"the qcow2 image is damaged: {(proc.stdout + proc.stderr).strip()[-300:]}",
                               field="source")

    def _keep(self, src: Path, target: Path, what: str, report: Report, end: int) -> None:
        """Keep the file as it is: a download is renamed, a local file copied (sparse)."""
        if self.url:
            os.replace(src, target)
            return
        _check_space(self.storage, src.stat().st_blocks * 512, f"copying the {what}")
        tmp = target.with_suffix(".part")
        private_file(tmp)
        run_qemu_img(["qemu-img", "convert", "-p", "-f", "raw", "-O", "raw", str(src), str(tmp)],
                     f"copying the {what}",
                     lambda pct: report(end + int((98 - end) * pct / 100), f"copying the {what}"))
        os.replace(tmp, target)


def import_image(storage: Storage, name: str, source: str, fmt: str, checksum: str | None,
                 report: Report, *, paths: PathPolicy | None = None,
                 urls: UrlPolicy | None = None) -> dict[str, Any]:
    return Importer(storage, name, source, fmt, checksum, paths=paths, urls=urls).run(report)
