"""Image files and VM disks of one host: a directory pool driven by qemu-img.

Layout under the storage dir::

    images/NAME.qcow2            imported or built images (read-only bases)
    images/NAME.vmlinuz|.initrd  direct-kernel-boot files of the tiny guest
    vms/NAME.qcow2               VM disks: qcow2 overlays backed by an image (O(1) to create)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corral.errors import Conflict, HostError, InsufficientResources, InvalidInput, NotFound
from corral.validation import validate_name

Progress = Callable[[int, str], None]


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    file_size: int
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(argv: list[str], what: str, timeout: float = 3600) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise HostError(f"{what}: {argv[0]} is not installed (apt-get install qemu-utils)") from exc
    if proc.returncode != 0:
        raise HostError(f"{what}: {proc.stderr.strip()[-500:] or f'exit {proc.returncode}'}")
    return proc.stdout


def qemu_img_info(path: Path) -> dict[str, Any]:
    out = _run(["qemu-img", "info", "--output=json", str(path)], f"read image {path.name}")
    info: dict[str, Any] = json.loads(out)
    return info


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.vms = root / "vms"
        for d in (self.images, self.vms):
            d.mkdir(parents=True, exist_ok=True)

    # -- paths: every name is validated before it becomes a path --------------------------
    def image_path(self, name: str) -> Path:
        return self.images / f"{validate_name(name, 'image')}.qcow2"

    def disk_path(self, vm: str) -> Path:
        return self.vms / f"{validate_name(vm, 'vm')}.qcow2"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def describe(self, name: str) -> ImageInfo:
        path = self.image_path(name)
        if not path.exists():
            raise NotFound(f"image file {path.name} not found on this host")
        info = qemu_img_info(path)
        kernel = path.with_suffix(".vmlinuz")
        initrd = path.with_suffix(".initrd")
        cmdline = path.with_suffix(".cmdline")
        return ImageInfo(
            format="qcow2",
            virtual_size=int(info["virtual-size"]),
            file_size=path.stat().st_size,
            kernel=str(kernel) if kernel.exists() else None,
            initrd=str(initrd) if initrd.exists() else None,
            cmdline=cmdline.read_text().strip() if cmdline.exists() else None,
        )

    # -- images ---------------------------------------------------------------------------
    def import_image(self, name: str, source: Path, fmt: str = "auto") -> ImageInfo:
        """Convert a qcow2/raw file into the pool; a failure leaves no partial file."""
        target = self.image_path(name)
        if target.exists():
            raise Conflict(f"image {name} already exists on this host")
        if not source.is_file():
            raise InvalidInput(f"source {source} is not a readable file", field="source")
        info = qemu_img_info(source)
        detected = str(info.get("format"))
        if detected not in ("qcow2", "raw"):
            raise InvalidInput(f"{source} is {detected}, not a qcow2 or raw image", field="source")
        if fmt != "auto" and fmt != detected:
            raise InvalidInput(f"{source} is {detected}, not {fmt}", field="format")
        if info.get("backing-filename"):
            raise InvalidInput(f"{source} has a backing file; import a standalone image", field="source")
        need = int(info.get("actual-size") or source.stat().st_size)
        if need > self.free_bytes():
            raise InsufficientResources(
                f"image needs {need >> 20} MiB, only {self.free_bytes() >> 20} MiB free"
            )
        tmp = target.with_suffix(".part")
        try:
            _run(["qemu-img", "convert", "-f", detected, "-O", "qcow2", str(source), str(tmp)],
                 f"convert {source.name}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return self.describe(name)

    def build_tiny(self, name: str, progress: Progress | None = None) -> ImageInfo:
        from corral.images.tiny import build_tiny_image

        target = self.image_path(name)
        if target.exists():
            raise Conflict(f"image {name} already exists on this host")
        work = self.root / "build" / name
        cache = self.root / "build" / "cache"
        try:
            tiny = build_tiny_image(work, progress=progress, cache_dir=cache)
            shutil.copyfile(tiny.kernel, target.with_suffix(".vmlinuz"))
            shutil.copyfile(tiny.initrd, target.with_suffix(".initrd"))
            target.with_suffix(".cmdline").write_text(tiny.cmdline + "\n")
            os.replace(tiny.disk, target)
        except BaseException:
            self.delete_image(name)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.describe(name)

    def delete_image(self, name: str) -> None:
        path = self.image_path(name)
        for suffix in (".qcow2", ".vmlinuz", ".initrd", ".cmdline", ".part"):
            path.with_suffix(suffix).unlink(missing_ok=True)

    # -- VM disks -------------------------------------------------------------------------
    def create_disk(self, vm: str, image: str, size: int | None) -> dict[str, Any]:
        """A qcow2 overlay on the image: O(1), whatever the image size. Idempotent."""
        base = self.image_path(image)
        if not base.exists():
            raise NotFound(f"image {image} not found on this host")
        path = self.disk_path(vm)
        if path.exists():
            return {"path": str(path), "created": False}
        base_size = int(qemu_img_info(base)["virtual-size"])
        if size is not None and size < base_size:
            raise InvalidInput(
                f"disk {size >> 20} MiB is smaller than image {image} ({base_size >> 20} MiB)",
                field="disk",
            )
        tmp = path.with_suffix(".part")
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(tmp)]
        if size is not None:
            argv.append(str(size))
        try:
            _run(argv, f"create disk of {vm}")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": str(path), "created": True}

    def delete_disk(self, vm: str) -> None:
        self.disk_path(vm).unlink(missing_ok=True)

    def disk_in_use_by(self, image: str) -> list[str]:
        """VM disks whose backing file is this image (never delete a base with clones)."""
        base = str(self.image_path(image))
        users = []
        for disk in self.vms.glob("*.qcow2"):
            try:
                if qemu_img_info(disk).get("backing-filename") == base:
                    users.append(disk.stem)
            except HostError:
                continue
        return users
