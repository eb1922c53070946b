"""VM root disks in storage pools (``vm create --pool``): dir, shared and Ceph RBD.

The host's own storage dir (``vms/NAME.qcow2``, the ``default`` pool) is corral.agent.storage;
this module puts root disks into the other pools, next to (never among) their volumes:

- **dir / shared** pools (files): the image is copied once into the pool as a base,
  ``POOL/.bases/img.IMAGE.qcow2`` (every host of a shared pool sees it at the same path), and
  each VM's root disk is a qcow2 overlay on it, ``POOL/.vms/NAME.qcow2`` (O(1)). A linked
  clone freezes the source's disk into ``POOL/.bases/SRC@NEW.qcow2`` (a rename) and gives the
  source and the clone an overlay each, as corral.agent.clones does in the storage dir.
- **rbd** pools: the image is imported once as a raw RBD image ``CEPH_POOL/img.IMAGE``
  (``qemu-img convert`` straight into Ceph) with a protected snapshot ``@base``; each VM's
  root disk is an RBD clone (layering) of it, ``CEPH_POOL/vm.NAME`` (O(1)), grown to the
  VM's disk size. A linked clone renames the source's image to ``base.SRC.NEW``, snapshots
  and protects it, and clones the source and the new VM from that snapshot.

Names with a dot never clash with volumes (volume names have none). A base lives as long as
a disk uses it: deleting a root disk removes every base up its chain that no disk (or other
base) uses any more, so deleting a VM leaves nothing behind and the source of a linked clone
can be deleted before its clones. Every step is idempotent (an engine that crashed runs its
operation again) and writes under a temporary name first, so a failure leaves nothing
half-made; the engine removes a failed create's disk with :meth:`RootDisks.delete`.
One lock per agent serializes base creation and collection (one host per pool in the lab;
several hosts of one shared/rbd pool would need a cluster lock: a later seam).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from corral.agent.clones import (
    convert_to,
    freeze_and_overlay,
    remove_unused_bases,
    snapshot_names,
)
from corral.agent.pools import PoolRegistry
from corral.agent.pools.base import Pool
from corral.agent.pools.dir import DirPool, qemu_img
from corral.agent.pools.rbd import RbdPool
from corral.agent.storage import Progress, Storage, grow_qcow2
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.validation import validate_name, validate_vm_name

_lock = threading.Lock()
SNAP = "base"


def _name(value: str, what: str) -> str:
    return validate_name(value, what)


def _vm(value: str) -> str:
    """A VM's full name (``NAME`` or ``PROJECT.NAME``: a VM of another project)."""
    return validate_vm_name(value, "vm")


class RootDisks:
    def __init__(self, pools: PoolRegistry, storage: Storage) -> None:
        self.pools = pools
        self.storage = storage

    def _pool(self, name: str) -> Pool:
        pool = self.pools.get(name)
        if name == "default":
            raise InvalidInput("root disks of the default pool are the host's vms/ directory",
                               field="pool")
        return pool

    # -- the API of the routes ---------------------------------------------------------
    def create(self, pool_name: str, vm: str, image: str, size: int | None,
               report: Progress | None = None) -> dict[str, Any]:
        pool = self._pool(pool_name)
        base = self.storage.image_path(image)
        # A pool that holds the image's base already (shared: another host put it there)
        # makes the disk from it: the image need not be in this host's images/ dir.
        if not base.exists() and not self.has_base(pool_name, image):
            raise NotFound(f"image {image} not found on this host (an ISO cannot be a root "
                           "disk in a pool)", field="image")
        if isinstance(pool, RbdPool):
            return _Rbd(pool).create(vm, image, base, size, report)
        assert isinstance(pool, DirPool)
        return _Files(pool).create(vm, image, base, size, report)

    def has_base(self, pool_name: str, image: str) -> bool:
        """Whether the pool holds image ``image``'s base (made whole, then renamed)."""
        pool = self._pool(pool_name)
        if isinstance(pool, RbdPool):
            return _Rbd(pool).exists(f"img.{_name(image, 'image')}")
        assert isinstance(pool, DirPool)
        return (_Files(pool).bases / f"img.{_name(image, 'image')}.qcow2").exists()

    def delete(self, pool_name: str, vm: str) -> dict[str, Any]:
        pool = self._pool(pool_name)
        if isinstance(pool, RbdPool):
            return _Rbd(pool).delete(vm)
        assert isinstance(pool, DirPool)
        return _Files(pool).delete(vm)

    def linked_clone(self, pool_name: str, source: str, new: str) -> dict[str, Any]:
        pool = self._pool(pool_name)
        if isinstance(pool, RbdPool):
            return _Rbd(pool).linked_clone(source, new)
        assert isinstance(pool, DirPool)
        return _Files(pool).linked_clone(source, new)

    def full_clone(self, pool_name: str, source: str, new: str, snapshot: str | None,
                   report: Progress | None) -> dict[str, Any]:
        pool = self._pool(pool_name)
        if isinstance(pool, RbdPool):
            if snapshot is not None:
                raise InvalidInput("VMs on rbd pools have no snapshots", field="snapshot")
            return _Rbd(pool).full_clone(source, new, report)
        assert isinstance(pool, DirPool)
        return _Files(pool).full_clone(source, new, snapshot, report)

    def grow(self, pool_name: str, vm: str, size: int) -> int:
        """Grow the stopped VM's root disk to ``size`` bytes (a running VM's grows through
        QEMU: the guest sees it); its capacity after."""
        if pool_name == "default":
            return self.storage.grow_disk(vm, size)
        pool = self._pool(pool_name)
        if isinstance(pool, RbdPool):
            return _Rbd(pool).grow(vm, size)
        assert isinstance(pool, DirPool)
        path = _Files(pool).disk(vm)
        if not path.exists():
            raise NotFound(f"the root disk of VM {vm} is not in pool {pool_name}")
        return grow_qcow2(path, size, f"root disk of VM {vm}")

    def qemu_source(self, pool_name: str, vm: str) -> str:
        """What ``qemu-img`` opens to read the VM's root disk (a template is made from it)."""
        pool = self._pool(pool_name)
        if isinstance(pool, RbdPool):
            rbd = _Rbd(pool)
            if not rbd.exists(rbd.disk(vm)):
                raise NotFound(f"the root disk of VM {vm} is not in pool {pool_name}")
            return rbd.uri(rbd.disk(vm))
        assert isinstance(pool, DirPool)
        path = _Files(pool).disk(vm)
        if not path.exists():
            raise NotFound(f"the root disk of VM {vm} is not in pool {pool_name}")
        return str(path)


# -- files: dir and shared pools ---------------------------------------------------------------

class _Files:
    def __init__(self, pool: DirPool) -> None:
        self.pool = pool
        self.vms = pool.root / ".vms"
        self.bases = pool.root / ".bases"

    def _dirs(self) -> None:
        for d in (self.vms, self.bases):
            d.mkdir(mode=0o711, exist_ok=True)

    def disk(self, vm: str) -> Path:
        return self.vms / f"{_vm(vm)}.qcow2"

    def create(self, vm: str, image: str, src: Path, size: int | None,
               report: Progress | None) -> dict[str, Any]:
        path = self.disk(vm)
        if path.exists():
            return {"source": str(path), "created": False}
        self._dirs()
        base = self.bases / f"img.{_name(image, 'image')}.qcow2"
        with _lock:
            if not base.exists():  # copied once; every VM of the image shares it
                tmp = base.with_name(f".{base.name}.part")
                try:
                    if report is not None:
                        report(10, f"copying image {image} into pool {self.pool.spec.name}")
                    shutil.copyfile(src, tmp)
                    tmp.chmod(0o644)
                    os.replace(tmp, base)
                finally:
                    tmp.unlink(missing_ok=True)
            tmp = path.with_name(f".{path.name}.part")
            argv = ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(tmp)]
            try:
                qemu_img(*argv, *([str(size)] if size else []), what=f"create disk of {vm}")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return {"source": str(path), "created": True}

    def delete(self, vm: str) -> dict[str, Any]:
        path = self.disk(vm)
        with _lock:
            existed = path.exists()
            path.unlink(missing_ok=True)
            removed = self._collect()
        return {"deleted": existed, "bases_removed": removed}

    def _collect(self) -> list[str]:
        """Remove bases no disk or other base uses (caller holds the lock)."""
        return remove_unused_bases(self.bases, self.vms)

    def linked_clone(self, source: str, new: str) -> dict[str, Any]:
        self._dirs()
        base = self.bases / f"{_vm(source)}@{_vm(new)}.qcow2"
        with _lock:
            return freeze_and_overlay(self.disk(source), self.disk(new), base, source)

    def full_clone(self, source: str, new: str, snapshot: str | None,
                   report: Progress | None) -> dict[str, Any]:
        target = self.disk(new)
        if target.exists():
            return {"source": str(target), "created": False}
        src = self.disk(source)
        if not src.exists():
            raise NotFound(f"the root disk of VM {source} is not in pool {self.pool.spec.name}")
        if snapshot is not None and snapshot not in snapshot_names(src):
            raise NotFound(f"VM {source} has no snapshot {snapshot}", field="snapshot")
        convert_to(src, target, "qcow2", [], report, f"copying the disk of {source}", snapshot)
        return {"source": str(target), "created": True}


# -- Ceph RBD ----------------------------------------------------------------------------------

class _Rbd:
    def __init__(self, pool: RbdPool) -> None:
        self.pool = pool
        if ":" in pool.conf or "@" in pool.conf:
            raise InvalidInput(f"ceph_conf {pool.conf} may not contain ':' or '@'",
                               field="ceph_conf")

    def disk(self, vm: str) -> str:
        return f"vm.{_vm(vm)}"

    def uri(self, image: str) -> str:
        """``qemu-img``'s name of an RBD image (auth none: cephx is a later seam)."""
        return f"rbd:{self.pool.pool}/{image}:conf={self.pool.conf}"

    def rbd(self, *args: str, what: str, timeout: float = 300) -> str:
        return self.pool._rbd(*args, what=what, timeout=timeout)

    def info(self, image: str) -> dict[str, Any] | None:
        try:
            out = self.rbd("info", "--format", "json", f"{self.pool.pool}/{image}",
                           what=f"read RBD image {image}")
        except NotFound:
            return None
        info: dict[str, Any] = json.loads(out)
        return info

    def exists(self, image: str) -> bool:
        return self.info(image) is not None

    def _snaps(self, image: str) -> dict[str, bool]:
        out = self.rbd("snap", "ls", "--format", "json", f"{self.pool.pool}/{image}",
                       what=f"list snapshots of {image}")
        return {str(s["name"]): bool(s.get("protected") in (True, "true")) for s in
                json.loads(out)}

    def _base_snapshot(self, image: str) -> None:
        """``image@base``, made and protected (idempotent)."""
        snaps = self._snaps(image)
        ref = f"{self.pool.pool}/{image}@{SNAP}"
        if SNAP not in snaps:
            self.rbd("snap", "create", "--no-progress", ref, what=f"snapshot {image}")
            snaps[SNAP] = False
        if not snaps[SNAP]:
            self.rbd("snap", "protect", ref, what=f"protect {image}@{SNAP}")

    def _clone(self, parent: str, image: str) -> None:
        self.rbd("clone", f"{self.pool.pool}/{parent}@{SNAP}", f"{self.pool.pool}/{image}",
                 what=f"clone {parent} as {image}")

    def _import(self, image_name: str, src: Path, report: Progress | None) -> str:
        """``img.IMAGE@base``: the image as a raw RBD image, imported once (lock held)."""
        img = f"img.{_name(image_name, 'image')}"
        if not self.exists(img):
            part = f"{img}.part"
            with contextlib.suppress(NotFound):  # an interrupted earlier import
                self.rbd("rm", "--no-progress", f"{self.pool.pool}/{part}", what="remove "
                         f"{part}")

            def progress(pct: int, msg: str) -> None:
                if report is not None:
                    report(5 + pct * 80 // 100, msg)

            try:
                convert_to(src, self.uri(part), "raw", [], progress,
                           f"importing image {image_name} into Ceph pool {self.pool.pool}",
                           rename=False)
                self.rbd("rename", f"{self.pool.pool}/{part}", f"{self.pool.pool}/{img}",
                         what=f"rename {part}")
            except BaseException:
                with contextlib.suppress(CorralError):
                    self.rbd("rm", "--no-progress", f"{self.pool.pool}/{part}",
                             what=f"remove {part}")
                raise
        self._base_snapshot(img)
        return img

    def create(self, vm: str, image: str, src: Path, size: int | None,
               report: Progress | None) -> dict[str, Any]:
        disk = self.disk(vm)
        with _lock:
            info = self.info(disk)
            if info is None:
                parent = self._import(image, src, report)
                if report is not None:
                    report(90, f"cloning {parent}@{SNAP} as {disk}")
                self._clone(parent, disk)
                info = self.info(disk)
                assert info is not None
            if size and int(info["size"]) < size:
                self.rbd("resize", "--no-progress", "--size", f"{size}B",
                         f"{self.pool.pool}/{disk}", what=f"grow {disk}")
        return {"source": f"{self.pool.pool}/{disk}", "created": True}

    def grow(self, vm: str, size: int) -> int:
        disk = self.disk(vm)
        info = self.info(disk)
        if info is None:
            raise NotFound(f"the root disk of VM {vm} is not in pool {self.pool.spec.name}")
        current = int(info["size"])
        if size < current:
            raise InvalidInput(f"the root disk of VM {vm} is {current >> 20} MiB; disks only "
                               f"grow, not to {size >> 20} MiB", field="size")
        if size > current:
            self.rbd("resize", "--no-progress", "--size", f"{size}B",
                     f"{self.pool.pool}/{disk}", what=f"grow {disk}")
        return size

    def delete(self, vm: str) -> dict[str, Any]:
        disk = self.disk(vm)
        with _lock:
            info = self.info(disk)
            if info is None:
                return {"deleted": False, "bases_removed": []}
            self.rbd("rm", "--no-progress", f"{self.pool.pool}/{disk}", what=f"delete {disk}")
            return {"deleted": True, "bases_removed": self._collect(info.get("parent"))}

    def _collect(self, parent: dict[str, Any] | None) -> list[str]:
        """Remove corral's bases up the chain that have no child left (lock held)."""
        removed: list[str] = []
        while parent and parent.get("pool") == self.pool.pool:
            image = str(parent.get("image"))
            if not image.startswith(("img.", "base.")):
                break  # not ours (e.g. a user's image that a volume was cloned from)
            ref = f"{self.pool.pool}/{image}@{parent.get('snapshot', SNAP)}"
            children = self.rbd("children", "--format", "json", ref,
                                what=f"list the clones of {image}")
            if json.loads(children):
                break
            info = self.info(image)
            if info is None:
                break
            with contextlib.suppress(CorralError):
                self.rbd("snap", "unprotect", ref, what=f"unprotect {ref}")
            self.rbd("snap", "rm", "--no-progress", ref, what=f"remove {ref}")
            self.rbd("rm", "--no-progress", f"{self.pool.pool}/{image}", what=f"remove {image}")
            removed.append(image)
            parent = info.get("parent")
        return removed

    def linked_clone(self, source: str, new: str) -> dict[str, Any]:
        """Freeze SOURCE's image as ``base.SOURCE.NEW@base``; SOURCE and NEW become clones of
        it. Idempotent: a re-run finishes whichever step is missing."""
        src, target = self.disk(source), self.disk(new)
        base = f"base.{_vm(source)}.{_vm(new)}"
        with _lock:
            if self.exists(target):
                return {"source": f"{self.pool.pool}/{target}", "created": False}
            if not self.exists(base):
                if self.info(src) is None:
                    raise NotFound(f"the root disk of VM {source} is not in Ceph pool "
                                   f"{self.pool.pool}")
                if self._snaps(src):
                    raise Conflict(f"the RBD image of VM {source} has snapshots", field="mode")
                self.rbd("rename", f"{self.pool.pool}/{src}", f"{self.pool.pool}/{base}",
                         what=f"freeze {src}")
            self._base_snapshot(base)
            if not self.exists(src):
                self._clone(base, src)
            self._clone(base, target)
        return {"source": f"{self.pool.pool}/{target}", "created": True, "base": base}

    def full_clone(self, source: str, new: str, report: Progress | None) -> dict[str, Any]:
        src, target = self.disk(source), self.disk(new)
        if self.exists(target):
            return {"source": f"{self.pool.pool}/{target}", "created": False}
        if not self.exists(src):
            raise NotFound(f"the root disk of VM {source} is not in Ceph pool {self.pool.pool}")
        part = f"{target}.part"
        with contextlib.suppress(NotFound):
            self.rbd("rm", "--no-progress", f"{self.pool.pool}/{part}", what=f"remove {part}")
        try:
            convert_to(self.uri(src), self.uri(part), "raw", [], report,
                       f"copying the disk of {source}", rename=False)
            self.rbd("rename", f"{self.pool.pool}/{part}", f"{self.pool.pool}/{target}",
                     what=f"rename {part}")
        except BaseException:
            with contextlib.suppress(CorralError):
                self.rbd("rm", "--no-progress", f"{self.pool.pool}/{part}", what=f"remove {part}")
            raise
        return {"source": f"{self.pool.pool}/{target}", "created": True}
