"""OVA export and import on the host, as jobs with progress (corral.images.ovf: descriptors).

    POST /v1/disks/{vm}/export-ova   OvaExportBody {path, cpus, memory_mib, nics, volumes}
                                   -> job: the VM's root disk and its attached volumes as
                                      streamOptimized VMDKs + OVF 1.0 descriptor + manifest
    POST /v1/images/{name}/import-ova {path}
                                   -> job: the OVA's first disk as image NAME
    POST /v1/pools/{pool}/volumes/{volume}/import-ova {path, disk}
                                   -> job: the OVA's disk number ``disk`` (0-based, descriptor
                                      order) written over the volume (a file pool's volume,
                                      made empty by the engine beforehand)

Bodies and answers: corral.agent_api.images. Everything is written beside the target as
``.part`` and renamed at the end: a failed or cancelled job leaves no half-written OVA or image.

Paths (corral.safepaths, the agent's policy): an OVA is read only from an import directory,
through the file opened once; one is written nowhere in the system's or corral's own
directories. Both are checked when the request comes (4xx, no job) and again in the job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter

from corral.agent.clones import convert_to
from corral.agent.jobs import JobReporter, JobRunner
from corral.agent.pools import PoolRegistry
from corral.agent.storage import IMAGE_MODE, Progress, Storage, qemu_img_info
from corral.agent_api.images import (
    OvaExportBody,
    OvaExported,
    OvaFillBody,
    OvaImportBody,
    OvaImported,
    VolumeFilled,
    VolumeRef,
)
from corral.agent_api.jobs import JobInfo
from corral.errors import Conflict, HostError, InvalidInput, NotFound
from corral.images import ovf
from corral.safepaths import PathPolicy
from corral.validation import validate_name, validate_vm_name


def file_source(pools: PoolRegistry, ref: VolumeRef | tuple[str, str]) -> tuple[Path, str]:
    """(file, format) of a volume of a file pool (dir, shared); 409 for RBD images."""
    pool, name = (ref.pool, ref.name) if isinstance(ref, VolumeRef) else ref
    info = pools.get(pool).volume(name)
    if info is None:
        raise NotFound(f"volume {pool}/{name} not found on this host")
    path = Path(info.source)
    if not path.is_absolute():
        raise Conflict(f"volume {pool}/{name} is an RBD image: OVA export and import handle "
                       "volumes of dir and shared pools", field="volume")
    return path, info.format


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _share(report: JobReporter | None, lo: int, span: int) -> Progress | None:
    """Progress of one step that takes ``span`` percent of a job from ``lo``."""
    if report is None:
        return None
    return lambda pct, msg: report(lo + pct * span // 100, msg)


def _check_target(policy: PathPolicy, path: str) -> Path:
    """The OVA to write: absolute, ``.ova``, allowed by the policy, its directory there."""
    target = Path(path)
    if not target.is_absolute() or target.suffix != ".ova":
        raise InvalidInput("the OVA path must be absolute and end in .ova", field="file")
    policy.check_write(target, "file")
    if not target.parent.is_dir():
        raise InvalidInput(f"directory {target.parent} does not exist", field="file")
    return target


def _write_tar(part: Path, members: list[Path]) -> None:
    """The OVA's tar at ``part``: made new (never through a symlink), mode 0640."""
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, IMAGE_MODE)
    except FileExistsError:
        part.unlink()  # an earlier attempt's (or a symlink put there): never written through
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, IMAGE_MODE)
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w",
                                                format=tarfile.USTAR_FORMAT) as tar:
        for p in members:  # descriptor first (OVF spec)
            info = tar.gettarinfo(str(p), arcname=p.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with p.open("rb") as src:
                tar.addfile(info, src)


def export_ova(storage: Storage, pools: PoolRegistry, vm: str, body: OvaExportBody,
               report: JobReporter | None, policy: PathPolicy | None = None) -> OvaExported:
    target = _check_target(policy or PathPolicy(), body.path)
    root = storage.disk_path(vm)
    if not root.exists():
        raise NotFound(f"the disk of VM {vm} is not on this host")
    if target.exists():
        return OvaExported(path=str(target), size=target.stat().st_size, created=False)
    sources = [root, *(file_source(pools, v)[0] for v in body.volumes)]
    with tempfile.TemporaryDirectory(dir=storage.root, prefix=".ova-") as work:
        vmdks: list[Path] = []
        disks: list[ovf.OvfDisk] = []
        for i, src in enumerate(sources):
            vmdk = Path(work) / f"disk{i + 1}.vmdk"
            convert_to(src, vmdk, "vmdk", ["-o", "subformat=streamOptimized"],
                       _share(report, i * 90 // len(sources), 90 // len(sources)),
                       what=f"converting disk {i + 1} of {vm} to VMDK")
            vmdks.append(vmdk)
            disks.append(ovf.OvfDisk(file=vmdk.name,
                                     capacity=int(qemu_img_info(src)["virtual-size"])))
        system = ovf.OvfSystem(
            name=vm, cpus=body.cpus, memory_mib=body.memory_mib, disks=disks,
            nics=[ovf.OvfNic(network=n.network, mac=n.mac, model="virtio") for n in body.nics])
        descriptor = Path(work) / f"{vm}.ovf"
        descriptor.write_bytes(ovf.build(system, [v.stat().st_size for v in vmdks]))
        manifest = Path(work) / f"{vm}.mf"
        manifest.write_text("".join(f"SHA256({p.name})= {_sha256(p)}\n"
                                    for p in (descriptor, *vmdks)))
        if report:
            report(95, "writing the OVA")
        part = target.with_name(target.name + ".part")
        try:
            _write_tar(part, [descriptor, manifest, *vmdks])
            os.replace(part, target)
        except OSError as exc:
            raise HostError(f"cannot write {target}: {exc.strerror or exc}",
                            field="file") from None
        finally:
            part.unlink(missing_ok=True)
    return OvaExported(path=str(target), size=target.stat().st_size, created=True)


def _extract(path: Path, member_name: str, work: Path) -> Path:
    """Copy one member of the OVA (a tar) into ``work``; 422 when it is missing or no file."""
    out = work / ovf.safe_member(member_name)
    try:
        with tarfile.open(path, "r:") as tar:
            member = tar.getmember(member_name)
            if not member.isfile():
                raise InvalidInput(f"OVA member {member_name} is not a file", field="file")
            src = tar.extractfile(member)
            assert src is not None
            with out.open("wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
    except KeyError:
        raise InvalidInput(f"the OVA has no member {member_name} (named by its descriptor)",
                           field="file") from None
    except tarfile.TarError as exc:
        raise InvalidInput(f"cannot read the OVA: {exc}", field="file") from None
    return out


def import_ova(storage: Storage, name: str, path: Path, report: JobReporter | None
               ) -> OvaImported:
    """Convert the OVA's first disk to image NAME (qcow2); returns the image's info and the
    hardware the descriptor asks for (its other disks: :func:`fill_volume`)."""
    system = ovf.parse(ovf.read_descriptor(path))
    target = storage.image_path(name)
    if not target.exists():
        disk = system.disks[0]
        with tempfile.TemporaryDirectory(dir=storage.root, prefix=".ova-") as work:
            member_path = _extract(path, disk.file, Path(work))
            if report:
                report(30, f"converting {disk.file}")
            try:
                convert_to(member_path, target, "qcow2", [],
                           (lambda p, m: report(30 + p * 7 // 10, m)) if report else None,
                           what=f"converting {disk.file}")
                storage.seal(name)
            except BaseException:
                storage.delete_image(name)
                raise
    info = storage.describe(name).model_dump()
    return OvaImported.model_validate(
        {**info, "system": {"name": system.name, "cpus": system.cpus,
                            "memory_mib": system.memory_mib,
                            "disks": [vars(d) for d in system.disks],
                            "nics": [vars(n) for n in system.nics]}})


def fill_volume(storage: Storage, pools: PoolRegistry, pool: str, volume: str, path: Path,
                disk: int, report: JobReporter | None) -> VolumeFilled:
    """Write the OVA's disk number ``disk`` over volume POOL/VOLUME (converted to the
    volume's format through ``.part``: a failure leaves the empty volume as it was)."""
    system = ovf.parse(ovf.read_descriptor(path))
    if not 0 <= disk < len(system.disks):
        raise InvalidInput(f"the OVA has {len(system.disks)} disk(s), not a disk {disk + 1}",
                           field="disk")
    target, fmt = file_source(pools, (pool, volume))
    member = system.disks[disk].file
    with tempfile.TemporaryDirectory(dir=storage.root, prefix=".ova-") as work:
        src = _extract(path, member, Path(work))
        if report:
            report(30, f"converting {member}")
        convert_to(src, target, fmt, [],
                   (lambda p, m: report(30 + p * 7 // 10, m)) if report else None,
                   what=f"converting {member}")
    target.chmod(0o600)
    return VolumeFilled(volume=f"{pool}/{volume}",
                        virtual_size=int(qemu_img_info(target)["virtual-size"]))


def _source(policy: PathPolicy, path: str) -> Path:
    """An OVA to read, checked now (the job opens it: PathPolicy.opened)."""
    if not Path(path).is_absolute():
        raise InvalidInput(f"{path} is not a readable file on this host", field="file")
    resolved = policy.check_read(path, "file")
    if not resolved.is_file():
        raise InvalidInput(f"{path} is not a readable file on this host", field="file")
    return Path(path)


def router(storage: Storage, jobs: JobRunner, pools: PoolRegistry,
           paths: Callable[[], PathPolicy] = PathPolicy) -> APIRouter:
    """``paths``: the agent's path policy now (its pools change); by default nothing may
    be read and only system and corral directories are refused for writes."""
    r = APIRouter()

    @r.post("/v1/disks/{vm}/export-ova")
    def export(vm: str, body: OvaExportBody, op: str | None = None) -> JobInfo:
        validate_vm_name(vm, "vm")
        target = _check_target(paths(), body.path)
        if (target.exists() or target.is_symlink()) and op is None:
            raise Conflict(f"{target} exists already", field="file")

        def work(report: JobReporter) -> OvaExported:
            return export_ova(storage, pools, vm, body, report, paths())

        return jobs.submit("vm.export_ova", f"disk:{vm}", work, message="exporting",
                           token=op).info()

    @r.post("/v1/images/{name}/import-ova")
    def import_(name: str, body: OvaImportBody, op: str | None = None) -> JobInfo:
        validate_name(name, "image")
        path = _source(paths(), body.path)

        def work(report: JobReporter) -> OvaImported:
            with paths().opened(path, "file") as pinned:
                return import_ova(storage, name, pinned, report)

        return jobs.submit("image.import_ova", f"image:{name}", work, message="importing",
                           token=op).info()

    @r.post("/v1/pools/{pool}/volumes/{volume}/import-ova")
    def fill(pool: str, volume: str, body: OvaFillBody, op: str | None = None) -> JobInfo:
        validate_name(volume, "volume")
        path = _source(paths(), body.path)
        file_source(pools, (pool, volume))  # refused now, not in the job

        def work(report: JobReporter) -> VolumeFilled:
            with paths().opened(path, "file") as pinned:
                return fill_volume(storage, pools, pool, volume, pinned, body.disk, report)

        return jobs.submit("volume.import_ova", f"volume:{pool}/{volume}", work,
                           message="importing", token=op).info()

    return r
