"""Calls of a stopped VM's own files (``corral.agent_api.vm_files``): the listing with
digests, a streamed read from the source, a streamed write to the target and a delete
(corral.engine.services.vm_offline_migration relays them, never holding a whole disk)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import httpx

from corral.agent_api import Deleted
from corral.agent_api.vm_files import VmFile, VmFileKind, VmFiles
from corral.engine.agent_calls import AgentCalls
from corral.engine.agent_calls.streams import read_from, write_to


class VmFileCalls(AgentCalls):
    _http: httpx.Client

    def vm_files(self, vm: str, digest: bool = False) -> VmFiles:
        """The VM's root disk and NVRAM files on the host (those there); ``digest``: with
        their SHA-256, which reads each file through."""
        return self._send("GET", f"/v1/vms/{vm}/files?digest={str(digest).lower()}",
                          VmFiles, timeout=3600 if digest else 30)

    @contextlib.contextmanager
    def read_vm_file(self, vm: str, kind: VmFileKind) -> Iterator[Iterator[bytes]]:
        """The file's bytes, in chunks, while the block runs (streams.read_from)."""
        with read_from(self._http, self.url, f"/v1/vms/{vm}/files/{kind}") as chunks:
            yield chunks

    def put_vm_file(self, vm: str, kind: VmFileKind, size: int, sha256: str,
                    chunks: Iterable[bytes], image: str | None = None) -> VmFile:
        """Stream ``chunks`` into the host's file, kept only if ``size`` and ``sha256``
        match (422 otherwise, nothing left there); ``image``: the image a root disk is
        over (its backing file becomes the host's copy)."""
        params: dict[str, str | int] = {"size": size, "sha256": sha256}
        if image is not None:
            params["image"] = image
        return write_to(self._http, self.url, f"/v1/vms/{vm}/files/{kind}", params, chunks,
                        VmFile)

    def delete_vm_file(self, vm: str, kind: VmFileKind) -> Deleted:
        return self._send("DELETE", f"/v1/vms/{vm}/files/{kind}", Deleted)
