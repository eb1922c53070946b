"""Image files and VM disks of one host: a directory pool driven by qemu-img.

Layout under the storage dir::

    images/NAME.qcow2            imported or built images (read-only bases)
    images/NAME.vmlinuz|.initrd  direct-kernel-boot files of the tiny guest
    images/NAME.iso              imported ISO 9660 images, kept as they are (format "iso": CD-ROMs)
    images/NAME.download|.part   an import under way (corral.agent.image_import)
    vms/NAME.qcow2               VM disks: qcow2 overlays backed by an image (O(1) to create)
    vms/NAME-cidata.iso          cloud-init NoCloud seed of a VM (read-only CD-ROM)

Partial files (``*.part``, ``*.download``, ``*.customize``, ``.ova-*`` work dirs) belong to a
running job only: at start the agent knows no jobs, and :meth:`Storage.sweep_leftovers`
removes them (an import never resumes a ``.download`` across restarts: it starts over).

Images and VM disks are mode 0640 (:data:`IMAGE_MODE`, owner root): not readable by every
user of the host. QEMU still opens them: libvirt's DAC driver (dynamic_ownership, the
default) gives every file of a VM, the whole backing chain of its disk included (the image
under a VM disk), kernel, initrd and CD-ROMs too, to QEMU's user (libvirt-qemu) when the
VM starts, as it does for the 0600 volumes of dir pools. 0640 rather than 0600: a host that
runs QEMU in root's group (or with dynamic_ownership off and a group ACL) still works.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.agent import children
from corral.agent_api.images import ImageInfo
from corral.errors import Conflict, HostError, InvalidInput, NotFound
from corral.validation import validate_name, validate_vm_name

Progress = Callable[[int, str], None]
IMAGE_MODE = 0o640
log = logging.getLogger(__name__)

# What interrupted jobs leave in the storage dir, by directory (relative to its root).
LEFTOVERS = (("images", ("*.part", "*.download", "*.customize")),
             ("vms", ("*.part", "*.customize")), ("vms/bases", ("*.part",)),
             (".", (".ova-*",)), ("build", (".customize-*",)),
             ("build/appliance-kernel", (".unpack-*",)))


def remove_leftover(path: Path, why: str) -> bool:
    """Remove a partial file (or work dir) of an interrupted job, and log it."""
    try:
        st = path.lstat()
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot remove %s (%s): %s", path, why, exc)
        return False
    log.warning("removed %s (%d MiB): %s", path, st.st_blocks * 512 >> 20, why)
    return True


def private_file(path: Path) -> None:
    """Create ``path`` empty with :data:`IMAGE_MODE` (not through a symlink), for a tool
    that then writes it (qemu-img keeps the mode of a file it overwrites): what it
    writes is never readable by other users, not even while it is being written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, IMAGE_MODE)
    try:
        os.fchmod(fd, IMAGE_MODE)
    finally:
        os.close(fd)


def _run(argv: list[str], what: str, timeout: float = 3600) -> str:
    try:
        proc = children.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise HostError(f"{what}: {argv[0]} is not installed (apt-get install qemu-utils)") from exc
    if proc.returncode != 0:
        raise HostError(f"{what}: {proc.stderr.strip()[-500:] or f'exit {proc.returncode}'}")
    return proc.stdout


def qemu_img_info(path: Path) -> dict[str, Any]:
    out = _run(["qemu-img", "info", "--output=json", str(path)], f"read image {path.name}")
    info: dict[str, Any] = json.loads(out)
    return info


def grow_qcow2(path: Path, size: int, what: str) -> int:
    """Grow a qcow2 file to ``size`` bytes (never shrinks: 422); its capacity after. Internal
    snapshots stay valid (QEMU grows an image that has them)."""
    current = int(qemu_img_info(path)["virtual-size"])
    if size < current:
        raise InvalidInput(f"{what} is {current >> 20} MiB; disks only grow, not to "
                           f"{size >> 20} MiB", field="size")
    if size > current:
        _run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(size)], f"grow {what}")
    return size


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.vms = root / "vms"
        for d in (self.images, self.vms):
            d.mkdir(parents=True, exist_ok=True)

    def sweep_leftovers(self) -> list[Path]:
        """Remove the partial files of jobs that died with an earlier agent (call at start,
        before any job runs)."""
        removed = []
        for sub, patterns in LEFTOVERS:
            d = self.root / sub
            for pattern in patterns:
                for path in sorted(d.glob(pattern)) if d.is_dir() else []:
                    if remove_leftover(path, "left by a job of an earlier agent"):
                        removed.append(path)
        return removed

    # -- paths: every name is validated before it becomes a path --------------------------
    def image_path(self, name: str) -> Path:
        return self.images / f"{validate_name(name, 'image')}.qcow2"

    def iso_path(self, name: str) -> Path:
        return self.images / f"{validate_name(name, 'image')}.iso"

    def image_file(self, name: str) -> Path:
        """The file of an image: NAME.qcow2, or NAME.iso for an ISO (NotFound if neither)."""
        for path in (self.image_path(name), self.iso_path(name)):
            if path.exists():
                return path
        raise NotFound(f"image {name} not found on this host")

    def disk_path(self, vm: str) -> Path:
        return self.vms / f"{validate_vm_name(vm, 'vm')}.qcow2"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def describe(self, name: str) -> ImageInfo:
        path = self.image_path(name)
        iso = self.iso_path(name)
        if not path.exists() and iso.exists():
            size = iso.stat().st_size
            return ImageInfo(format="iso", virtual_size=size, file_size=size)
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
    def build_tiny(self, name: str, progress: Progress | None = None,
                   guest_agent: bool = False) -> ImageInfo:
        from corral.images.tiny import build_tiny_image

        target = self.image_path(name)
        if target.exists():
            raise Conflict(f"image {name} already exists on this host")
        work = self.root / "build" / name
        cache = self.root / "build" / "cache"
        try:
            tiny = build_tiny_image(work, progress=progress, cache_dir=cache,
                                    guest_agent=guest_agent)
            shutil.copyfile(tiny.kernel, target.with_suffix(".vmlinuz"))
            shutil.copyfile(tiny.initrd, target.with_suffix(".initrd"))
            target.with_suffix(".cmdline").write_text(tiny.cmdline + "\n")
            os.replace(tiny.disk, target)
            self.seal(name)
        except BaseException:
            self.delete_image(name)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.describe(name)

    def seal(self, name: str) -> None:
        """Give the files of image NAME :data:`IMAGE_MODE` (whatever made them)."""
        path = self.image_path(name)
        for suffix in (".qcow2", ".iso", ".vmlinuz", ".initrd", ".cmdline"):
            with contextlib.suppress(FileNotFoundError):
                path.with_suffix(suffix).chmod(IMAGE_MODE)

    def delete_image(self, name: str) -> None:
        path = self.image_path(name)
        for suffix in (".qcow2", ".vmlinuz", ".initrd", ".cmdline", ".part", ".iso", ".download"):
            path.with_suffix(suffix).unlink(missing_ok=True)

    # -- VM disks -------------------------------------------------------------------------
    def create_disk(self, vm: str, image: str | None, size: int | None) -> dict[str, Any]:
        """A qcow2 overlay on the image: O(1), whatever the image size. Idempotent.

        Without an image, a blank thin qcow2 of ``size`` bytes (a VM installed from an ISO).
        """
        if image is None:
            return self._create_blank(vm, size)
        base = self.image_path(image)
        if not base.exists() and self.iso_path(image).exists():
            raise InvalidInput(f"image {image} is an ISO: attach it as a CD-ROM (vm create --iso) "
                               "instead of using it as a disk", field="image")
        if not base.exists():
            raise NotFound(f"image {image} not found on this host")
        path = self.disk_path(vm)
        if path.exists():
            return {"path": str(path), "created": False}
        # The engine checked the size against the image's; no qemu-img info here (~20 ms).
        tmp = path.with_suffix(".part")
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(tmp)]
        if size is not None:
            argv.append(str(size))
        try:
            private_file(tmp)
            _run(argv, f"create disk of {vm}")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": str(path), "created": True}

    def _create_blank(self, vm: str, size: int | None) -> dict[str, Any]:
        if size is None or size <= 0:
            raise InvalidInput("a blank disk needs a size", field="disk")
        path = self.disk_path(vm)
        if path.exists():
            return {"path": str(path), "created": False}
        tmp = path.with_suffix(".part")
        try:
            private_file(tmp)
            _run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), str(size)],
                 f"create disk of {vm}")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": str(path), "created": True}

    def delete_disk(self, vm: str) -> None:
        self.disk_path(vm).unlink(missing_ok=True)

    def grow_disk(self, vm: str, size: int) -> int:
        """Grow the stopped VM's root disk to ``size`` bytes; its capacity after."""
        path = self.disk_path(vm)
        if not path.exists():
            raise NotFound(f"the root disk of VM {vm} is not on this host")
        return grow_qcow2(path, size, f"root disk of VM {vm}")

    # -- cloud-init seeds: vms/NAME-cidata.iso, read-only CD-ROM of the VM ---------------
    def seed_path(self, vm: str) -> Path:
        return self.vms / f"{validate_vm_name(vm, 'vm')}-cidata.iso"

    def write_seed(self, vm: str, files: dict[str, str]) -> dict[str, Any]:
        """Build the NoCloud ISO from the engine's files; replaces any earlier seed atomically."""
        from corral.cloudinit import build_iso

        path = self.seed_path(vm)
        data = build_iso(files)
        tmp = path.with_name(path.name + ".part")
        try:
            tmp.write_bytes(data)
            tmp.chmod(0o644)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": str(path), "size": len(data)}

    def delete_seed(self, vm: str) -> None:
        self.seed_path(vm).unlink(missing_ok=True)

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
