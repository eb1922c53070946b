"""Calls that copy an image's files between hosts (``corral.agent_api.image_files``): the
listing with digests, a streamed read from the source and a streamed write to the target,
never holding a whole file in memory (corral.engine.services.image_copies relays them)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import urlencode

import httpx
from pydantic import ValidationError

from corral.agent_api.image_files import FileKind, ImageFile, ImageFiles, ImageInPool
from corral.engine.agent_calls import AgentCalls
from corral.engine.agent_errors import answered_error, transport_errors
from corral.errors import HostError

CHUNK = 1 << 20
# Per read or write on the socket (httpx), not for the whole file: a big image streams for
# as long as it takes while each step stays bounded.
# A target answers a PUT once the file is on its disk (fsync): a longer read.
STREAM_TIMEOUT = httpx.Timeout(120.0, read=600.0)


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
        """The file's bytes, in chunks, while the block runs. A read that breaks off is this
        agent's error (AgentUnreachable naming it), wherever the chunks are consumed."""
        path = f"/v1/images/{name}/files/{kind}"
        with transport_errors(self.url, f"GET {path}"), \
                self._http.stream("GET", path, timeout=STREAM_TIMEOUT) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise answered_error(resp)

            def chunks() -> Iterator[bytes]:
                with transport_errors(self.url, f"GET {path}"):
                    yield from resp.iter_bytes(CHUNK)

            yield chunks()

    def put_image_file(self, name: str, kind: FileKind, size: int, sha256: str,
                       chunks: Iterable[bytes]) -> ImageFile:
        """Stream ``chunks`` into the host's file; it keeps them only if ``size`` and
        ``sha256`` match (422 otherwise, and nothing is left there)."""
        path = f"/v1/images/{name}/files/{kind}"
        with transport_errors(self.url, f"PUT {path}"):
            resp = self._http.put(path, params={"size": size, "sha256": sha256},
                                  content=chunks, timeout=STREAM_TIMEOUT)
        if resp.status_code >= 400:
            raise answered_error(resp)
        try:
            return ImageFile.model_validate(resp.json())
        except (ValueError, ValidationError) as exc:
            raise HostError(f"agent at {self.url} answered PUT {path} with what this engine "
                            f"cannot read: {exc}") from None
