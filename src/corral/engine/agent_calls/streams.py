"""Streamed calls of an agent's files (an image's, a stopped VM's): a read from the source
and a write to the target, chunk by chunk, never a whole file in memory. They bypass
``AgentCalls._request``, so the transport's and the agent's errors are mapped here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from corral.engine.agent_errors import answered_error, transport_errors
from corral.errors import HostError

CHUNK = 1 << 20
# Per read or write on the socket (httpx), not for the whole file: a big image streams for
# as long as it takes while each step stays bounded.
# A target answers a PUT once the file is on its disk (fsync): a longer read.
STREAM_TIMEOUT = httpx.Timeout(120.0, read=600.0)

M = TypeVar("M", bound=BaseModel)


@contextlib.contextmanager
def read_from(http: httpx.Client, url: str, path: str) -> Iterator[Iterator[bytes]]:
    """The bytes at ``path``, in chunks, while the block runs. A read that breaks off is
    this agent's error (AgentUnreachable naming it), wherever the chunks are consumed."""
    with transport_errors(url, f"GET {path}"), \
            http.stream("GET", path, timeout=STREAM_TIMEOUT) as resp:
        if resp.status_code >= 400:
            resp.read()
            raise answered_error(resp)

        def chunks() -> Iterator[bytes]:
            with transport_errors(url, f"GET {path}"):
                yield from resp.iter_bytes(CHUNK)

        yield chunks()


def write_to(http: httpx.Client, url: str, path: str, params: dict[str, str | int],
             chunks: Iterable[bytes], answer: type[M]) -> M:
    """Stream ``chunks`` in a PUT to ``path``; the agent's answer as ``answer``."""
    with transport_errors(url, f"PUT {path}"):
        resp = http.put(path, params=params, content=chunks, timeout=STREAM_TIMEOUT)
    if resp.status_code >= 400:
        raise answered_error(resp)
    try:
        return answer.model_validate(resp.json())
    except (ValueError, ValidationError) as exc:
        raise HostError(f"agent at {url} answered PUT {path} with what this engine cannot "
                        f"read: {exc}") from None
