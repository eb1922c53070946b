"""A stopped VM's own files, read and written whole: the two ends of an offline migration,
which the engine relays (corral.engine.services.vm_offline_migration) as it relays images.

    GET    /v1/vms/{vm}/files?digest=BOOL     -> VmFiles (those here; the list may be empty)
    GET    /v1/vms/{vm}/files/{kind}          -> the bytes, streamed (409 while it runs)
    PUT    /v1/vms/{vm}/files/{kind}?size=N&sha256=HEX[&image=NAME]  body: bytes -> VmFile
    DELETE /v1/vms/{vm}/files/{kind}          -> Deleted

``root`` is the root disk in the host's storage dir (``vms/VM.qcow2``), ``nvram`` the UEFI
variable store (``vms/VM.nvram.fd``, corral.engine.services.vm_design.nvram_path). A write
goes to a ``*.part`` file of its own (swept at the agent's start), hashed as it arrives
(corral.agent.image_files.receive), and is linked into place only when size and SHA-256
match and no file of that name is there: a VM's disk is never overwritten. A root disk over
an image gets this host's copy of image ``NAME`` as its backing file (the paths of two hosts'
storage dirs may differ; the engine brought the image first). Models:
corral.agent_api.vm_files.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from corral.agent import children
from corral.agent.image_files import check_digest, file_response, receive, sha256_of
from corral.agent.storage import IMAGE_MODE, Storage, qemu_img_info
from corral.agent_api import Deleted
from corral.agent_api.vm_files import VM_FILE_KINDS, VmFile, VmFileKind, VmFiles
from corral.errors import Conflict, HostError, InvalidInput, NotFound
from corral.httpserve import RouteLimit
from corral.validation import validate_vm_name

# The write streams its body and bounds it by its ``size``: no body limit of the app applies.
UPLOAD: RouteLimit = ("PUT", re.compile("/v1/vms/[^/]+/files/[^/]+"), None)
REBASE_TIMEOUT_S = 60.0  # ``rebase -u`` rewrites one header field


def file_path(storage: Storage, vm: str, kind: VmFileKind) -> Path:
    name = validate_vm_name(vm, "vm")
    return storage.vms / (f"{name}.qcow2" if kind == "root" else f"{name}.nvram.fd")


def _backing(path: Path) -> str | None:
    backing = qemu_img_info(path).get("backing-filename")
    return str(backing) if backing else None


def _describe(path: Path, kind: VmFileKind, digest: bool) -> VmFile | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    return VmFile(kind=kind, size=size, sha256=sha256_of(path) if digest else None,
                  backing=_backing(path) if kind == "root" else None)


def _adopt_root(storage: Storage, part: Path, image: str | None) -> None:
    """A received root disk: a qcow2 whose backing file (if any) becomes this host's image."""
    info = qemu_img_info(part)
    if info.get("format") != "qcow2":
        raise InvalidInput(f"a root disk is a qcow2 file, not {info.get('format')}",
                           field="kind")
    if not info.get("backing-filename"):
        return
    if image is None:
        raise InvalidInput("this disk is an overlay: name the image it is over", field="image")
    base = storage.image_path(image)
    if not base.exists():
        raise NotFound(f"image {image} is not on this host: bring it before the disk",
                       field="image")
    proc = children.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b",
                         str(base), str(part)], capture_output=True, text=True,
                        timeout=REBASE_TIMEOUT_S)
    if proc.returncode != 0:
        raise HostError(f"point the disk at image {image}: {proc.stderr.strip()[-500:]}")


def router(storage: Storage, state_of: Callable[[str], str | None]) -> APIRouter:
    """``state_of(vm)``: the state of the VM's domain here (None: no domain)."""
    r = APIRouter()

    @r.get("/v1/vms/{vm}/files")
    def files(vm: str, digest: bool = False) -> VmFiles:
        found = [_describe(file_path(storage, vm, k), k, digest) for k in VM_FILE_KINDS]
        return VmFiles(files=[f for f in found if f is not None])

    @r.get("/v1/vms/{vm}/files/{kind}")
    def read(vm: str, kind: VmFileKind) -> StreamingResponse:
        path = file_path(storage, vm, kind)
        state = state_of(vm)
        if state in ("running", "paused"):  # a disk in use is no consistent copy
            raise Conflict(f"VM {vm} is {state} on this host: its files are read only "
                           "while it is stopped", field="vm")
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"VM {vm} has no {kind} file on this host", field="kind") from None
        return file_response(f)

    @r.put("/v1/vms/{vm}/files/{kind}")
    async def write(vm: str, kind: VmFileKind, size: int, sha256: str, request: Request,
                    image: str | None = None) -> VmFile:
        path = file_path(storage, vm, kind)
        want = check_digest(sha256.lower())
        if size < 0:
            raise InvalidInput("size must be 0 or more bytes", field="size")
        if path.exists():
            raise Conflict(f"VM {vm} already has a {kind} file on this host: it is not "
                           "replaced", field="kind")
        part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            await receive(request, part, size, want, f"the {kind} file of VM {vm}")
            if kind == "root":
                await run_in_threadpool(_adopt_root, storage, part, image)
            part.chmod(IMAGE_MODE)
            try:
                os.link(part, path)  # never over a file that came meanwhile
            except FileExistsError:
                raise Conflict(f"VM {vm} already has a {kind} file on this host: it is not "
                               "replaced", field="kind") from None
        finally:
            part.unlink(missing_ok=True)
        return VmFile(kind=kind, size=size, sha256=want,
                      backing=await run_in_threadpool(_backing, path) if kind == "root"
                      else None)

    @r.delete("/v1/vms/{vm}/files/{kind}")
    def delete(vm: str, kind: VmFileKind) -> Deleted:
        path = file_path(storage, vm, kind)
        state = state_of(vm)
        if state in ("running", "paused"):
            raise Conflict(f"VM {vm} is {state} on this host: its files stay", field="vm")
        try:
            path.unlink()
        except FileNotFoundError:
            return Deleted(deleted=False)
        return Deleted(deleted=True)

    return r
