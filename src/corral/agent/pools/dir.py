"""A directory pool: one file per volume, ``PATH/NAME.qcow2`` or ``PATH/NAME.raw``.

Volumes are thin (qcow2 grows as the guest writes; raw files are sparse), made by
``qemu-img create`` under a hidden ``.NAME.FORMAT.part`` name and renamed into place, so a
failed or interrupted create leaves no half-written volume. Files are 0600: libvirt gives
them to QEMU's user while a VM uses them (dynamic ownership). What a job killed with an
earlier agent left (:func:`leftover_parts`) is removed when the agent starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from corral.agent.pools.base import (
    FORMATS,
    PoolSpec,
    check_grow,
    check_room,
    check_volume_request,
    round_mib,
    run,
)
from corral.agent_api.pools import PoolStats, VolumeInfo
from corral.errors import Conflict, InvalidInput, NotFound
from corral.validation import validate_name

CREATED_MARK = ".corral-created"  # the agent made this directory: teardown may remove it
# Partial volumes in the pool's own directory: ``.NAME.FMT.part`` (create) and
# ``NAME.FMT.part`` (an OVA's disk written over a volume); any other file there is not ours.
_VOLUME_PART = re.compile(r"^\.?[^/]+\.(qcow2|raw)\.part$")


def leftover_parts(root: Path) -> list[Path]:
    """The partial files corral's jobs write in a file pool: volumes being made, and root
    disks and bases (``.vms``, ``.bases``, corral's own directories: every ``*.part``)."""
    found = [p for p in root.glob("*.part") if _VOLUME_PART.match(p.name)] if root.is_dir() else []
    for sub in (".vms", ".bases"):
        if (root / sub).is_dir():
            found += (root / sub).glob("*.part")
    return sorted(p for p in found if p.is_file() and not p.is_symlink())


def qemu_img(*args: str, what: str) -> str:
    return run(["qemu-img", *args], what, package="qemu-utils")


class DirPool:
    def __init__(self, spec: PoolSpec, reserved: tuple[Path, ...] = ()) -> None:
        if not spec.path:
            raise InvalidInput(f"pool {spec.name} has no path", field="path")
        self.spec = spec
        self.root = Path(spec.path)
        self.reserved = reserved  # the agent's own dirs (images/, vms/): never a pool

    # -- the pool ----------------------------------------------------------------------
    def check(self) -> None:
        root = self.root
        if not root.is_absolute() or ".." in root.parts:
            raise InvalidInput(f"path {root} must be absolute and normalized", field="path")
        for r in self.reserved:
            if root == r or r in root.parents:
                raise Conflict(f"path {root} is inside {r}, which corral keeps for itself",
                               field="path")
        if root.exists() and not root.is_dir():
            raise Conflict(f"path {root} exists and is not a directory", field="path")
        existing = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
        if not os.access(existing, os.W_OK):
            raise Conflict(f"path {root}: {existing} is not writable", field="path")
        for d in (root, *root.parents):  # QEMU runs as its own user: it must reach the files
            if d.exists() and not d.stat().st_mode & 0o001:
                raise Conflict(f"path {root}: {d} is not searchable by other users, so QEMU "
                               f"cannot reach volumes below it (chmod o+x {d})", field="path")

    def setup(self, marker: str = "write") -> dict[str, Any]:
        self.check()
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o711)
            self.root.chmod(0o711)
            (self.root / CREATED_MARK).write_text(self.spec.id + "\n")
        return {}

    def teardown(self) -> None:
        mark = self.root / CREATED_MARK
        if mark.exists():
            mark.unlink()
            for sub in (".vms", ".bases"):  # root disks' dirs (pools/roots.py), if empty
                with contextlib.suppress(OSError):
                    (self.root / sub).rmdir()
            with contextlib.suppress(OSError):  # only when empty: never remove data
                self.root.rmdir()

    def stats(self) -> PoolStats:
        try:
            st = os.statvfs(self.root)
        except FileNotFoundError:
            raise NotFound(f"pool {self.spec.name}: directory {self.root} is gone") from None
        capacity = st.f_blocks * st.f_frsize
        return PoolStats(capacity=capacity, allocation=capacity - st.f_bfree * st.f_frsize,
                         available=st.f_bavail * st.f_frsize)

    # -- volumes -----------------------------------------------------------------------
    def _file(self, name: str, fmt: str) -> Path:
        return self.root / f"{validate_name(name, 'volume')}.{fmt}"

    def _find(self, name: str) -> Path | None:
        for fmt in FORMATS:
            path = self._file(name, fmt)
            if path.exists():
                return path
        return None

    def _info(self, path: Path) -> VolumeInfo:
        fmt = path.suffix[1:]
        st = path.stat()
        if fmt == "raw":
            capacity = st.st_size
        else:
            info = json.loads(qemu_img("info", "--output=json", "-f", fmt, "-U", str(path),
                                       what=f"read volume {path.name}"))
            capacity = int(info["virtual-size"])
        return VolumeInfo(name=path.stem, format=fmt, capacity=capacity,
                          allocation=st.st_blocks * 512, source=str(path))

    def volumes(self) -> list[VolumeInfo]:
        found = []
        for fmt in FORMATS:
            for path in sorted(self.root.glob(f"*.{fmt}")):
                try:
                    validate_name(path.stem)
                except InvalidInput:
                    continue  # not a volume of ours (e.g. an image dir's neighbour)
                with contextlib.suppress(FileNotFoundError):
                    found.append(self._info(path))
        return sorted(found, key=lambda v: v.name)

    def volume(self, name: str) -> VolumeInfo | None:
        path = self._find(name)
        return None if path is None else self._info(path)

    def create_volume(self, name: str, size: int, fmt: str) -> VolumeInfo:
        check_volume_request(name, size, fmt)
        size = round_mib(size)
        existing = self.volume(name)
        if existing is not None:  # a re-run of our own create, or someone else's file
            if existing.format == fmt and existing.capacity == size:
                return existing
            raise Conflict(f"pool {self.spec.name} already holds a volume file "
                           f"{Path(existing.source).name}", field="name")
        check_room(self, size, f"volume {name}")
        path = self._file(name, fmt)
        tmp = self.root / f".{path.name}.part"
        try:
            qemu_img("create", "-q", "-f", fmt, str(tmp), str(size), what=f"create volume {name}")
            tmp.chmod(0o600)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return self._info(path)

    def resize_volume(self, name: str, size: int) -> VolumeInfo:
        info = self.volume(name)
        if info is None:
            raise NotFound(f"volume {name} not found in pool {self.spec.name}")
        size = round_mib(size)
        check_grow(info, size)
        if size == info.capacity:
            return info
        check_room(self, size - info.capacity, f"growing volume {name}")
        qemu_img("resize", "-q", "-f", info.format, info.source, str(size),
                 what=f"resize volume {name}")
        return self._info(Path(info.source))

    def delete_volume(self, name: str) -> bool:
        path = self._find(name)
        if path is None:
            return False
        path.unlink(missing_ok=True)
        return True
