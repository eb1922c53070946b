"""Calls that copy an image's files between hosts (``corral.agent_api.image_files``): the
listing with digests, a streamed read from the source and a streamed write to the target,
never holding a whole file in memory (corral.engine.services.image_copies relays them)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import urlencode

import httpx

from corral.agent_api.image_files import FileKind, ImageFile, ImageFiles, ImageInPool
from corral.engine.agent_calls import AgentCalls
from corral.engine.agent_calls.streams import read_from, write_to


class ImageFileCalls(AgentCalls):
    _http: httpx.Client

    def image_files(self, name: str, digest: bool = False,
                    kinds: Sequence[FileKind] = ()) -> ImageFiles:
        """The image's files on the host (404: none), or only ``kinds``; ``digest``: with
        their SHA-256, which reads each file through (a long call for a big image)."""
        query = urlencode([("digest", str(digest).lower()), *(("kind", k) for k in kinds)])
        return self._send("GET", f"/v1/images/{name}/files?{query}", ImageFiles,
                          timeout=3600 if digest else 30)

    def image_in_pool(self, pool: str, image: str) -> ImageInPool:
        return self._send("GET", f"/v1/pools/{pool}/bases/{image}", ImageInPool, timeout=60)

    @contextlib.contextmanager
    def read_image_file(self, name: str, kind: FileKind) -> Iterator[Iterator[bytes]]:
        """The file's bytes, in chunks, while the block runs (streams.read_from)."""
        with read_from(self._http, self.url, f"/v1/images/{name}/files/{kind}") as chunks:
            yield chunks

    def put_image_file(self, name: str, kind: FileKind, size: int, sha256: str,
                       chunks: Iterable[bytes]) -> ImageFile:
        """Stream ``chunks`` into the host's file; it keeps them only if ``size`` and
        ``sha256`` match (422 otherwise, and nothing is left there)."""
        return write_to(self._http, self.url, f"/v1/images/{name}/files/{kind}",
                        {"size": size, "sha256": sha256}, chunks, ImageFile)
