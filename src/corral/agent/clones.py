"""Clones of VM disks, templates, and the agent's snapshot routes.

Linked clones (O(1)): a qcow2 backing file must never change, and the source VM keeps
writing to its disk, so the source's disk is first *frozen*: renamed (atomic, O(1)) to
``vms/bases/SRC@NEW.qcow2``; then the source gets a fresh overlay on it at its old path and
the clone an overlay of its own. Both see the same data; neither changes the base. A base is
removed by :func:`collect_bases` once no disk uses it any more (so deleting the source VM
is always allowed: its clones keep the base alive). A source with internal snapshots is
refused (they would stay behind in the frozen base); use a full clone.

Full clones (``qemu-img convert``, run as a job with progress) are independent, flattened
qcow2 files; from a snapshot they copy the disk as it was then (``-l snapshot.name=S``).
A template is such a flattened copy written as an image (``images/NAME.qcow2``).
Everything is written to ``.part`` and renamed at the end: a failed copy leaves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from corral.agent import children
from corral.agent.hypervisor import Hypervisor
from corral.agent.hypervisor.snapshots import SnapshotOps
from corral.agent.jobs import JobReporter, JobRunner
from corral.agent.storage import Progress, Storage, _run, private_file
from corral.agent_api import Deleted
from corral.agent_api.domains import DomainInfo
from corral.agent_api.images import ImageInfo
from corral.agent_api.jobs import JobInfo
from corral.agent_api.snapshots import (
    BasesRemoved,
    CloneBody,
    ClonedDisk,
    SnapshotBody,
    SnapshotInfo,
    TemplateBody,
)
from corral.errors import Conflict, HostError, NotFound
from corral.validation import validate_name, validate_vm_name

_chains = threading.Lock()  # freezing a disk and collecting bases never interleave
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def bases_dir(storage: Storage) -> Path:
    d = storage.vms / "bases"
    d.mkdir(exist_ok=True)
    return d


def _snapshot_count(path: Path) -> int:
    """nb_snapshots of a qcow2 header (big-endian u32 at offset 60): no qemu-img to spawn."""
    with path.open("rb") as f:
        head = f.read(64)
    if len(head) < 64 or head[:4] != b"QFI\xfb":
        raise HostError(f"{path.name} is not a qcow2 image")
    return int.from_bytes(head[60:64], "big")


def linked_clone(storage: Storage, source: str, new: str) -> dict[str, Any]:
    """Freeze SOURCE's disk into a base and put overlays for SOURCE and NEW on it."""
    base = bases_dir(storage) / f"{validate_vm_name(source, 'vm')}@{validate_vm_name(new, 'vm')}.qcow2"
    with _chains:
        return freeze_and_overlay(storage.disk_path(source), storage.disk_path(new), base,
                                  source)


def freeze_and_overlay(src: Path, target: Path, base: Path, source: str) -> dict[str, Any]:
    """Rename SRC to BASE (O(1)) and give SRC and TARGET an overlay each on it. Idempotent:
    a re-run after a crash finishes whichever step is missing. One ``qemu-img create``: both
    overlays are empty and name the same base, so the second is a copy of the first. The
    caller holds the lock of the directory's chains."""
    if target.exists():
        return {"path": str(target), "source": str(target), "created": False,
                "base": str(base)}
    if not base.exists():
        if not src.exists():
            raise NotFound(f"the disk of VM {source} is not on this host")
        if _snapshot_count(src):
            raise Conflict(
                f"VM {source} has snapshots ({', '.join(snapshot_names(src))}): a linked clone "
                "would leave them behind in a frozen base; make a full clone (--full, "
                "optionally --from-snapshot) or delete the snapshots", field="mode")
        os.rename(src, base)
    tmp = target.with_suffix(".part")
    src_tmp = src.with_suffix(".part")
    try:
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
              str(tmp)], f"create overlay {target.name}")
        if not src.exists():
            shutil.copyfile(tmp, src_tmp)
            os.replace(src_tmp, src)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        src_tmp.unlink(missing_ok=True)
    return {"path": str(target), "source": str(target), "created": True, "base": str(base)}


def snapshot_names(path: Path) -> list[str]:
    """Names of the internal snapshots of a qcow2 file (readable beside a running QEMU)."""
    return [str(s["name"]) for s in qemu_img_info_shared(path).get("snapshots") or []]


def collect_bases(storage: Storage) -> list[str]:
    """Remove frozen bases that no disk (VM disk or other base) uses any more."""
    if not any(bases_dir(storage).glob("*.qcow2")):  # the common case: no qemu-img at all
        return []
    with _chains:
        return remove_unused_bases(bases_dir(storage), storage.vms)


def remove_unused_bases(bases: Path, disks: Path) -> list[str]:
    """Remove the qcow2 files of ``bases`` that no qcow2 of ``disks`` or of ``bases`` has as
    its backing file, until none is left unused (a base may back another base); the names
    removed. The caller serializes it with whatever creates disks there."""
    removed: list[str] = []
    while True:
        found = {str(p): p for p in bases.glob("*.qcow2")} if bases.is_dir() else {}
        if not found:
            return removed
        used: set[str] = set()
        users = list(disks.glob("*.qcow2")) if disks.is_dir() else []
        for disk in [*users, *found.values()]:
            try:  # -U: a running guest's disk (QEMU holds its lock) must be read too
                backing = qemu_img_info_shared(disk).get("backing-filename")
            except HostError:
                return removed  # a disk we cannot read may use any base: keep them all
            if backing:
                used.add(str(backing))
        unused = [p for key, p in found.items() if key not in used]
        if not unused:
            return removed
        for p in unused:
            p.unlink(missing_ok=True)
            removed.append(p.name)


def convert(source: Path | str, target: Path, report: Progress | None, snapshot: str | None = None,
            what: str = "copy") -> None:
    """``qemu-img convert`` to a flattened qcow2 at ``target`` (through ``target.part``)."""
    convert_to(source, target, "qcow2", [], report, what, snapshot)


def convert_to(source: Path | str, target: Path | str, fmt: str, options: list[str],
               report: Progress | None, what: str, snapshot: str | None = None,
               rename: bool = True) -> None:
    """``qemu-img convert -O FMT`` with progress, through ``target.part`` (nothing left behind
    on failure or cancellation). ``rename=False``: straight to ``target`` (an ``rbd:`` name,
    which the caller writes under a temporary name and removes on failure)."""
    tmp: Path | str = target
    if rename:
        target = Path(target)
        tmp = target.with_name(target.name + ".part")
    argv = ["qemu-img", "convert", "-p", "-O", fmt, *options]
    if snapshot is not None:  # snapshot clusters never change: safe beside a running QEMU
        argv += ["-U", "-l", f"snapshot.name={snapshot}"]
    argv += [str(source), str(tmp)]
    if rename:
        private_file(Path(tmp))  # an image or disk: not for every user (storage.IMAGE_MODE)
    proc = children.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        buf = b""
        while chunk := proc.stdout.read1(256):  # type: ignore[attr-defined]
            buf = (buf + chunk)[-256:]
            found = _PROGRESS.findall(buf)
            if found and report is not None:
                report(int(float(found[-1])), f"{what}: {float(found[-1]):.0f}%")
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise HostError(f"{what}: {err.strip()[-500:]}")
        if rename:
            os.replace(tmp, target)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if isinstance(tmp, Path) and rename:
            tmp.unlink(missing_ok=True)


def full_clone(storage: Storage, source: str, new: str, snapshot: str | None,
               report: Progress | None) -> dict[str, Any]:
    target = storage.disk_path(new)
    if target.exists():
        return {"path": str(target), "created": False}
    src = storage.disk_path(source)
    if not src.exists():
        raise NotFound(f"the disk of VM {source} is not on this host")
    if snapshot is not None:
        names = [s["name"] for s in qemu_img_info_shared(src).get("snapshots") or []]
        if snapshot not in names:
            raise NotFound(f"VM {source} has no snapshot {snapshot}", field="snapshot")
    convert(src, target, report, snapshot, what=f"copying the disk of {source}")
    return {"path": str(target), "created": True}


def qemu_img_info_shared(path: Path) -> dict[str, Any]:
    """``qemu-img info -U``: readable while a running QEMU holds the image."""
    import json

    out = _run(["qemu-img", "info", "-U", "--output=json", str(path)], f"read {path.name}")
    info: dict[str, Any] = json.loads(out)
    return info


def template(storage: Storage, vm: str, name: str, boot_from: str | None,
             report: Progress | None, source: str | None = None) -> dict[str, Any]:
    """Flatten a stopped VM's disk into image NAME (with the direct-boot files of the VM's
    image, for the tiny guest). ``source``: what qemu-img reads when the disk is in a pool
    (a file, or an ``rbd:`` name); by default the VM's disk in the storage dir."""
    target = storage.image_path(name)
    if not target.exists():
        src: Path | str = storage.disk_path(vm) if source is None else source
        if isinstance(src, Path) and not src.exists():
            raise NotFound(f"the disk of VM {vm} is not on this host")
        try:
            if boot_from is not None:
                origin = storage.image_path(boot_from)
                for suffix in (".vmlinuz", ".initrd", ".cmdline"):
                    if origin.with_suffix(suffix).exists():
                        shutil.copyfile(origin.with_suffix(suffix), target.with_suffix(suffix))
            convert(src, target, report, what=f"writing template {name}")
            storage.seal(name)
        except BaseException:
            storage.delete_image(name)
            raise
    return storage.describe(name).model_dump()


def router(storage: Storage, hv: Hypervisor, jobs: JobRunner,
           after_start: Callable[[], None] = lambda: None) -> APIRouter:
    """``after_start`` runs after a revert (a running snapshot starts a new QEMU: new taps)."""
    r = APIRouter()
    snaps = SnapshotOps(hv)

    @r.get("/v1/domains/{vm}/snapshots")
    def list_snapshots(vm: str) -> list[SnapshotInfo]:
        return [SnapshotInfo.model_validate(s) for s in snaps.list(vm)]

    @r.post("/v1/domains/{vm}/snapshots")
    def create_snapshot(vm: str, body: SnapshotBody) -> SnapshotInfo:
        validate_name(body.name, "snapshot")
        return SnapshotInfo.model_validate(
            snaps.create(vm, body.name, body.memory, body.quiesce, body.description))

    @r.post("/v1/domains/{vm}/snapshots/{name}/revert")
    def revert_snapshot(vm: str, name: str) -> DomainInfo:
        out = snaps.revert(vm, name)
        after_start()
        return DomainInfo.model_validate(out)

    @r.delete("/v1/domains/{vm}/snapshots/{name}")
    def delete_snapshot(vm: str, name: str) -> Deleted:
        return Deleted(deleted=snaps.delete(vm, name))

    @r.put("/v1/disks/{vm}/linked-clone")
    def linked(vm: str, body: CloneBody) -> ClonedDisk:
        return ClonedDisk.model_validate(linked_clone(storage, body.source, vm))

    @r.post("/v1/disks/{vm}/full-clone")
    def full(vm: str, body: CloneBody, op: str | None = None) -> JobInfo:
        validate_vm_name(vm, "vm")
        validate_vm_name(body.source, "source")
        if body.snapshot is not None:
            validate_name(body.snapshot, "snapshot")

        def work(report: JobReporter) -> ClonedDisk:
            return ClonedDisk.model_validate(
                full_clone(storage, body.source, vm, body.snapshot, report))

        return jobs.submit("disk.clone", f"disk:{vm}", work, message="copying",
                           token=op).info()

    @r.post("/v1/images/{name}/from-disk")
    def from_disk(name: str, body: TemplateBody, op: str | None = None) -> JobInfo:
        validate_name(name, "image")
        validate_vm_name(body.vm, "vm")

        def work(report: JobReporter) -> ImageInfo:
            return ImageInfo.model_validate(template(storage, body.vm, name, body.boot_from,
                                                     report))

        return jobs.submit("image.template", f"image:{name}", work, message="flattening",
                           token=op).info()

    @r.post("/v1/disks/collect-bases")
    def collect() -> BasesRemoved:
        return BasesRemoved(removed=collect_bases(storage))

    return r
