"""The files of an image, read and written one by one: the two ends of a copy of an image
from host to host, which the engine relays (corral.engine.services.image_copies).

    GET /v1/images/{name}/files?digest=BOOL[&kind=K...]  -> ImageFiles (404: none here)
    GET /v1/images/{name}/files/{kind}             -> the file's bytes, streamed
    PUT /v1/images/{name}/files/{kind}?size=N&sha256=HEX   body: the bytes -> ImageFile

Both directions stream in chunks of :data:`CHUNK` (memory stays bounded whatever the image's
size). A received file is written to a ``*.part`` file of its own (two copies at once do not
mix; the agent sweeps leftovers at start), hashed as it arrives, and renamed into place only
when its size and SHA-256 are the ones announced: a mismatch (422 naming ``sha256`` or
``size``) or a cut leaves nothing behind. Models: corral.agent_api.image_files.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from corral.agent.jobs import JobRunner
from corral.agent.storage import IMAGE_MODE, Storage, private_file
from corral.agent_api.image_files import BOOT_KINDS, MAIN_KINDS, FileKind, ImageFile, ImageFiles
from corral.errors import Conflict, InvalidInput, NotFound
from corral.httpserve import RouteLimit
from corral.validation import validate_name

CHUNK = 1 << 20  # bytes read, or gathered before a write, at a time
# The write streams its body and bounds it by its ``size``: no body limit of the app applies.
UPLOAD: RouteLimit = ("PUT", re.compile("/v1/images/[^/]+/files/[^/]+"), None)


def file_path(storage: Storage, name: str, kind: FileKind) -> Path:
    return storage.images / f"{validate_name(name, 'image')}.{kind}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_digest(value: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidInput("sha256 must be 64 lowercase hex digits", field="sha256")
    return value


def _append(out: IO[bytes], h: hashlib._Hash, data: bytes) -> None:
    out.write(data)
    h.update(data)


async def receive(request: Request, part: Path, size: int, want: str, what: str) -> None:
    """Stream the request's body into ``part`` (made here, private), hashing it as it
    arrives; 422 naming ``size`` or ``sha256`` unless it is ``size`` bytes of SHA-256
    ``want``. The caller moves ``part`` into place, and removes it whatever happens."""
    h = hashlib.sha256()
    got = 0
    private_file(part)  # never readable by others, not even while written
    with part.open("wb") as out:
        buf = bytearray()
        async for chunk in request.stream():
            got += len(chunk)
            if got > size:
                raise InvalidInput(f"the body is longer than the {size} bytes announced",
                                   field="size")
            buf += chunk
            if len(buf) >= CHUNK:
                await run_in_threadpool(_append, out, h, bytes(buf))
                buf.clear()
        await run_in_threadpool(_append, out, h, bytes(buf))
        await run_in_threadpool(os.fsync, out.fileno())
    if got != size:
        raise InvalidInput(f"the copy of {what} was cut short: {got} of {size} bytes",
                           field="size")
    if h.hexdigest() != want:
        raise InvalidInput(f"checksum mismatch for {what}: expected sha256:{want}, "
                           f"got sha256:{h.hexdigest()}; the copy was refused", field="sha256")


def file_response(f: IO[bytes]) -> StreamingResponse:
    """The open file's bytes, in chunks, with its length; the file is closed at the end."""
    size = os.fstat(f.fileno()).st_size

    def chunks() -> Iterator[bytes]:  # iterated in a worker thread by Starlette
        with f:
            while chunk := f.read(CHUNK):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})


def router(storage: Storage, runner: JobRunner) -> APIRouter:
    r = APIRouter()

    @r.get("/v1/images/{name}/files")
    def files(name: str, digest: bool = False,
              kind: list[FileKind] = Query(default=[])) -> ImageFiles:
        """``kind`` (repeated): only those files (a digest reads a file through)."""
        found = []
        for k in (*BOOT_KINDS, *MAIN_KINDS):  # the image file last: see the module doc
            if kind and k not in kind:
                continue
            path = file_path(storage, name, k)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            found.append(ImageFile(kind=k, size=size,
                                   sha256=sha256_of(path) if digest else None))
        if not found:
            raise NotFound(f"image {name} not found on this host", field="image")
        return ImageFiles(files=found)

    @r.get("/v1/images/{name}/files/{kind}")
    def read(name: str, kind: FileKind) -> StreamingResponse:
        path = file_path(storage, name, kind)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"image {name} has no {kind} file on this host",
                           field="image") from None
        return file_response(f)

    @r.put("/v1/images/{name}/files/{kind}")
    async def write(name: str, kind: FileKind, size: int, sha256: str,
                    request: Request) -> ImageFile:
        path = file_path(storage, name, kind)
        want = check_digest(sha256.lower())
        if size < 0:
            raise InvalidInput("size must be 0 or more bytes", field="size")
        job = runner.running(f"image:{name}")
        if job is not None:
            raise Conflict(f"image {name} is busy: {job.kind} job {job.id} runs on it")
        if kind in MAIN_KINDS and path.exists():
            users = await run_in_threadpool(storage.disk_in_use_by, name)
            if users:  # a base under VM disks is never rewritten: it would corrupt them
                raise Conflict(f"image {name} on this host is the base of VM disks "
                               f"({', '.join(users)}); it is not replaced", field="image")
        part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            await receive(request, part, size, want, path.name)
            os.replace(part, path)
            path.chmod(IMAGE_MODE)
        finally:
            part.unlink(missing_ok=True)
        return ImageFile(kind=kind, size=size, sha256=want)

    return r
