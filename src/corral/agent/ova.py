"""OVA export and import on the host, as jobs with progress (corral.images.ovf: descriptors).

    POST /v1/disks/{vm}/export-ova   {path, system}  -> job: the VM's disk as a streamOptimized
                                                        VMDK + OVF 1.0 descriptor + manifest
    POST /v1/images/{name}/import-ova {path}         -> job: the OVA's first disk as image NAME

Everything is written beside the target as ``.part`` and renamed at the end: a failed or
cancelled job leaves no half-written OVA or image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from corral.agent.clones import convert_to
from corral.agent.jobs import JobReporter, JobRunner
from corral.agent.storage import Storage
from corral.errors import Conflict, InvalidInput, NotFound
from corral.images import ovf
from corral.validation import validate_name


class NicBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    network: str | None = None
    mac: str | None = None


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    cpus: int
    memory_mib: int
    nics: list[NicBody] = []


class ImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def export_ova(storage: Storage, vm: str, body: ExportBody, report: JobReporter | None
               ) -> dict[str, Any]:
    target = Path(body.path)
    disk = storage.disk_path(vm)
    if not disk.exists():
        raise NotFound(f"the disk of VM {vm} is not on this host")
    if target.exists():
        return {"path": str(target), "size": target.stat().st_size, "created": False}
    with tempfile.TemporaryDirectory(dir=storage.root, prefix=".ova-") as work:
        vmdk = Path(work) / "disk1.vmdk"
        convert_to(disk, vmdk, "vmdk", ["-o", "subformat=streamOptimized"],
                   (lambda p, m: report(p * 9 // 10, m)) if report else None,
                   what=f"converting the disk of {vm} to VMDK")
        from corral.agent.storage import qemu_img_info

        system = ovf.OvfSystem(
            name=vm, cpus=body.cpus, memory_mib=body.memory_mib,
            disks=[ovf.OvfDisk(file="disk1.vmdk",
                               capacity=int(qemu_img_info(disk)["virtual-size"]))],
            nics=[ovf.OvfNic(network=n.network, mac=n.mac, model="virtio") for n in body.nics])
        descriptor = Path(work) / f"{vm}.ovf"
        descriptor.write_bytes(ovf.build(system, [vmdk.stat().st_size]))
        manifest = Path(work) / f"{vm}.mf"
        manifest.write_text("".join(f"SHA256({p.name})= {_sha256(p)}\n"
                                    for p in (descriptor, vmdk)))
        if report:
            report(95, "writing the OVA")
        part = target.with_name(target.name + ".part")
        try:
            with tarfile.open(part, "w", format=tarfile.USTAR_FORMAT) as tar:
                for p in (descriptor, manifest, vmdk):  # descriptor first (OVF spec)
                    info = tar.gettarinfo(str(p), arcname=p.name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with p.open("rb") as f:
                        tar.addfile(info, f)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
    return {"path": str(target), "size": target.stat().st_size, "created": True}


def import_ova(storage: Storage, name: str, path: Path, report: JobReporter | None
               ) -> dict[str, Any]:
    """Convert the OVA's first disk to image NAME (qcow2); returns the image's info and the
    hardware the descriptor asks for."""
    system = ovf.parse(ovf.read_descriptor(path))
    target = storage.image_path(name)
    if not target.exists():
        disk = system.disks[0]
        with tempfile.TemporaryDirectory(dir=storage.root, prefix=".ova-") as work:
            member_path = Path(work) / ovf.safe_member(disk.file)
            try:
                with tarfile.open(path, "r:") as tar:
                    member = tar.getmember(disk.file)
                    if not member.isfile():
                        raise InvalidInput(f"OVA member {disk.file} is not a file", field="file")
                    src = tar.extractfile(member)
                    assert src is not None
                    with member_path.open("wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
            except KeyError:
                raise InvalidInput(f"the OVA has no member {disk.file} (named by its "
                                   "descriptor)", field="file") from None
            except tarfile.TarError as exc:
                raise InvalidInput(f"cannot read the OVA: {exc}", field="file") from None
            if report:
                report(30, f"converting {disk.file}")
            try:
                convert_to(member_path, target, "qcow2", [],
                           (lambda p, m: report(30 + p * 7 // 10, m)) if report else None,
                           what=f"converting {disk.file}")
            except BaseException:
                storage.delete_image(name)
                raise
    info = storage.describe(name).to_dict()
    return {**info, "system": {"name": system.name, "cpus": system.cpus,
                               "memory_mib": system.memory_mib,
                               "disks": [vars(d) for d in system.disks],
                               "nics": [vars(n) for n in system.nics]}}


def router(storage: Storage, jobs: JobRunner) -> APIRouter:
    r = APIRouter()

    @r.post("/v1/disks/{vm}/export-ova")
    def export(vm: str, body: ExportBody, op: str | None = None) -> dict[str, Any]:
        validate_name(vm, "vm")
        target = Path(body.path)
        if not target.is_absolute() or target.suffix != ".ova":
            raise InvalidInput("the OVA path must be absolute and end in .ova", field="file")
        if not target.parent.is_dir():
            raise InvalidInput(f"directory {target.parent} does not exist", field="file")
        if target.exists() and op is None:
            raise Conflict(f"{target} exists already", field="file")

        def work(report: JobReporter) -> dict[str, Any]:
            return export_ova(storage, vm, body, report)

        return jobs.submit("vm.export_ova", f"disk:{vm}", work, message="exporting",
                           token=op).to_dict()

    @r.post("/v1/images/{name}/import-ova")
    def import_(name: str, body: ImportBody, op: str | None = None) -> dict[str, Any]:
        validate_name(name, "image")
        path = Path(body.path)
        if not path.is_absolute() or not path.is_file():
            raise InvalidInput(f"{path} is not a readable file on this host", field="file")

        def work(report: JobReporter) -> dict[str, Any]:
            return import_ova(storage, name, path, report)

        return jobs.submit("image.import_ova", f"image:{name}", work, message="importing",
                           token=op).to_dict()

    return r
