"""Calls of a stopped VM's own files (``corral.agent_api.vm_files``): the listing with
digests, a streamed read from the source, a streamed write to the target and a delete
(corral.engine.services.vm_offline_migration relays them, never holding a whole disk)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import httpx
from pydantic import ValidationError

from corral.agent_api import Deleted
from corral.agent_api.vm_files import VmFile, VmFileKind, VmFiles
from corral.engine.agent_calls import AgentCalls
from corral.engine.agent_calls.image_files import CHUNK, STREAM_TIMEOUT
from corral.engine.agent_errors import answered_error, transport_errors
from corral.errors import HostError


class VmFileCalls(AgentCalls):
    _http: httpx.Client

    def vm_files(self, vm: str, digest: bool = False) -> VmFiles:
        """The VM's root disk and NVRAM files on the host (those there); ``digest``: with
        their SHA-256, which reads each file through."""
        return self._send("GET", f"/v1/vms/{vm}/files?digest={str(digest).lower()}",
                          VmFiles, timeout=3600 if digest else 30)

    @contextlib.contextmanager
    def read_vm_file(self, vm: str, kind: VmFileKind) -> Iterator[Iterator[bytes]]:
        """The file's bytes, in chunks, while the block runs; a read that breaks off is
        this agent's error (AgentUnreachable naming it)."""
        path = f"/v1/vms/{vm}/files/{kind}"
        with transport_errors(self.url, f"GET {path}"), \
                self._http.stream("GET", path, timeout=STREAM_TIMEOUT) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise answered_error(resp)

            def chunks() -> Iterator[bytes]:
                with transport_errors(self.url, f"GET {path}"):
                    yield from resp.iter_bytes(CHUNK)

            yield chunks()

    def put_vm_file(self, vm: str, kind: VmFileKind, size: int, sha256: str,
                    chunks: Iterable[bytes], image: str | None = None) -> VmFile:
        """Stream ``chunks`` into the host's file, kept only if ``size`` and ``sha256``
        match (422 otherwise, nothing left there); ``image``: the image a root disk is
        over (its backing file becomes the host's copy)."""
        path = f"/v1/vms/{vm}/files/{kind}"
        params: dict[str, str | int] = {"size": size, "sha256": sha256}
        if image is not None:
            params["image"] = image
        with transport_errors(self.url, f"PUT {path}"):
            resp = self._http.put(path, params=params, content=chunks, timeout=STREAM_TIMEOUT)
        if resp.status_code >= 400:
            raise answered_error(resp)
        try:
            return VmFile.model_validate(resp.json())
        except (ValueError, ValidationError) as exc:
            raise HostError(f"agent at {self.url} answered PUT {path} with what this engine "
                            f"cannot read: {exc}") from None

    def delete_vm_file(self, vm: str, kind: VmFileKind) -> Deleted:
        return self._send("DELETE", f"/v1/vms/{vm}/files/{kind}", Deleted)
