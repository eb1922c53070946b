"""HTTP(S) downloads of images: streamed to a file, resumed, checksummed, sparse, with progress.

``download(url, dest, ...)`` streams the body into ``dest`` with httpx. A connection that
drops mid-file is resumed where it stopped (``Range`` + ``If-Range``, a bounded number of
times, with back-off); a server that ignores Range makes the download start over. The
SHA-256 of the bytes, when asked for (a checksum to verify), is computed while they stream,
in a thread of its own (hashlib releases the GIL: it overlaps the transfer). Runs of zero
bytes are not written but skipped (the file stays sparse, as ``cp --sparse`` would leave
it): raw disk images are mostly zeros, and ``qemu-img convert`` then skips the holes
instead of reading them.

Where it may connect: corral.safeurls (``guard``; by default no loopback, link-local or
host address). The URL's host is resolved and checked before anything connects, every
connection goes to an address so checked (:class:`_GuardedBackend`: no second lookup, no
DNS rebinding), and every request, redirects included, is checked again.

Errors (corral.errors): a refused address -> InvalidInput (``source``,
corral.safeurls.REFUSED); 404/410 -> NotFound; other HTTP errors, unreachable hosts, a body
that stays shorter than announced -> HostError; a body larger than the free space ->
InsufficientResources; a wrong checksum -> InvalidInput (field ``checksum``). On any error
``dest`` is removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpcore
import httpx

from corral.errors import CorralError, HostError, InsufficientResources, InvalidInput, NotFound
from corral.safeurls import UrlPolicy

Progress = Callable[[int, int | None, str], None]  # (bytes so far, total or None, message)

# httpcore reads the socket 64 KiB at a time; larger reads make a Python download as fast as
# curl. They must stay below the agent's fixed mmap threshold (corral.agent.__main__,
# 256 KiB): a 1 MiB read buffer was mmapped and unmapped for every chunk, page faults
# included, and made a 1 GiB download on loopback 3x slower (2.25 s instead of 0.72 s,
# measured with the agent's malloc tuning); 192 KiB reads take 0.65 s. The attribute is
# private to httpcore: when it is gone, downloads only get slower.
_READ_SIZE = 192 << 10
try:  # pragma: no cover - depends on the httpcore version
    from httpcore._sync import http11 as _http11

    if getattr(_http11.HTTP11Connection, "READ_NUM_BYTES", 0) < _READ_SIZE:
        _http11.HTTP11Connection.READ_NUM_BYTES = _READ_SIZE
except (ImportError, AttributeError):
    pass

_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_ZERO_RUNS: dict[int, bytes] = {}  # zero bytes of each chunk size seen (compared, never copied)
FREE_MARGIN = 64 << 20  # keep this much free on the image store
FREE_CHECK_EVERY = 256 << 20  # bytes between free-space checks when the size is unknown
CONNECT_RETRIES = 2  # a host that refuses connections from the start: fail soon
PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True)
class Downloaded:
    size: int
    sha256: str | None  # None unless asked for
    resumes: int  # how many times a dropped connection was resumed
    restarts: int  # how many times the download started over (server ignored Range)


class _Retry(Exception):
    """The transfer stopped early; try again (resuming) if attempts are left."""


class _GuardedBackend(httpcore.SyncBackend):
    """Connects only to addresses the policy permits: the host is resolved here, once, each
    address checked, and the socket connected to that address (TLS still verifies and sends
    the URL's host name: httpcore passes it to ``start_tls``)."""

    def __init__(self, guard: UrlPolicy) -> None:
        self.guard = guard

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        addresses = self.guard.addresses(host, port)  # InvalidInput when one is refused
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        error: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over :class:`_GuardedBackend` (a proxy from the environment, if
    any, gets its own transport from httpx: the request hook still checks the URL)."""

    def __init__(self, guard: UrlPolicy) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(),
                                             network_backend=_GuardedBackend(guard))


def _human(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n < 1 << 30 else f"{n / (1 << 30):.2f} GiB"


def _status_error(resp: httpx.Response, url: str) -> CorralError:
    what = f"{resp.status_code} {resp.reason_phrase}".strip()
    if resp.status_code in (404, 410):
        return NotFound(f"the server answered {what} for {url}", field="source")
    return HostError(f"the server answered {what} for {url}", field="source")


def _zeros(n: int) -> bytes | None:
    run = _ZERO_RUNS.get(n)
    if run is None and len(_ZERO_RUNS) < 256 and n <= 4 * _READ_SIZE:
        run = _ZERO_RUNS[n] = bytes(n)
    return run


class _Hasher:
    """SHA-256 in a thread of its own, fed through a bounded queue (at most 32 chunks)."""

    _RESET = b""

    def __init__(self) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._hash = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            if item is self._RESET:
                self._hash = hashlib.sha256()
            else:
                self._hash.update(item)

    def update(self, chunk: bytes) -> None:
        if chunk:
            self._q.put(chunk)

    def reset(self) -> None:
        self._q.put(self._RESET)

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


class _Writer:
    """Writes the body at its offset, leaving holes for zeros; hashes every byte if asked."""

    def __init__(self, f: BinaryIO, hasher: _Hasher | None) -> None:
        self.f = f
        self.have = 0
        self.hash = hasher

    def restart(self) -> None:
        self.f.seek(0)
        self.f.truncate(0)
        self.have = 0
        if self.hash is not None:
            self.hash.reset()

    def write(self, chunk: bytes) -> None:
        n = len(chunk)
        if self.hash is not None:
            self.hash.update(chunk)
        if chunk[:1] == b"\0" and chunk[-1:] == b"\0" and chunk == _zeros(n):
            self.f.seek(n, 1)
        else:
            self.f.write(chunk)
        self.have += n

    def finish(self) -> None:
        self.f.truncate(self.have)  # a trailing hole still counts in the size


def download(
    url: str,
    dest: Path,
    *,
    progress: Progress | None = None,
    free_bytes: Callable[[], int] | None = None,
    expected_sha256: str | None = None,
    sha256: bool = False,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 0.5,
    guard: UrlPolicy | None = None,
) -> Downloaded:
    """Download ``url`` into ``dest`` (replaced); see the module docstring.

    The SHA-256 is computed when ``expected_sha256`` (hex) or ``sha256`` is given.
    ``guard``: the addresses it may connect to (default: corral.safeurls' defaults).
    """
    guard = guard or UrlPolicy()
    guard.check_url(url)  # refused before dest is made or anything connects
    report: Progress = progress or (lambda _n, _t, _m: None)
    hasher = _Hasher() if expected_sha256 is not None or sha256 else None
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
        os.fchmod(fd, 0o640)  # an image is not for every user of the host
        with os.fdopen(fd, "wb") as f:
            got = _transfer(url, _Writer(f, hasher), report, free_bytes, retries, timeout,
                            backoff, guard)
    except OSError as exc:
        dest.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise InsufficientResources(f"the image store ran out of space downloading {url}") from exc
        raise HostError(f"cannot write {dest.name}: {exc.strerror or exc}") from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        if hasher is not None:
            hasher.close()
    if expected_sha256 is not None and got.sha256 != expected_sha256.lower():
        dest.unlink(missing_ok=True)
        raise InvalidInput(
            f"checksum mismatch for {url}: expected sha256:{expected_sha256.lower()}, "
            f"got sha256:{got.sha256} ({got.size} bytes)", field="checksum")
    return got


def _transfer(url: str, out: _Writer, report: Progress, free_bytes: Callable[[], int] | None,
              retries: int, timeout: float, backoff: float, guard: UrlPolicy) -> Downloaded:
    total: int | None = None
    validator: str | None = None  # ETag or Last-Modified of the first answer, for If-Range
    failures = resumes = restarts = 0
    connected = False
    last_error = ""
    timeouts = httpx.Timeout(timeout, connect=min(timeout, 15.0))
    def check(request: httpx.Request) -> None:  # every request: redirects too
        guard.check_url(str(request.url))

    with httpx.Client(transport=_GuardedTransport(guard), follow_redirects=True,
                      timeout=timeouts, headers={"Accept-Encoding": "identity"},
                      event_hooks={"request": [check]}) as client:
        while True:
            headers = {}
            if out.have:
                headers["Range"] = f"bytes={out.have}-"
                if validator:
                    headers["If-Range"] = validator
            try:
                with client.stream("GET", url, headers=headers) as resp:
                    connected = True
                    if resp.status_code in (502, 503, 504):
                        raise _Retry(f"the server answered {resp.status_code} "
                                     f"{resp.reason_phrase}".strip())
                    if resp.status_code >= 400:
                        raise _status_error(resp, url)
                    if resp.status_code == 206 and out.have:
                        m = _CONTENT_RANGE_RE.match(resp.headers.get("content-range", ""))
                        if m is None or int(m.group(1)) != out.have:
                            raise HostError(f"the server sent a wrong range for {url}: "
                                            f"{resp.headers.get('content-range')!r}")
                        if total is None and m.group(3).isdigit():
                            total = int(m.group(3))
                        resumes += 1
                    elif resp.status_code == 200:
                        if out.have:  # Range ignored, or the file changed: start over
                            restarts += 1
                            out.restart()
                        length = resp.headers.get("content-length")
                        total = int(length) if length and length.isdigit() else None
                        validator = resp.headers.get("etag") or resp.headers.get("last-modified")
                        if validator and validator.startswith("W/"):
                            validator = None  # a weak ETag cannot validate a range
                    else:
                        raise HostError(f"unexpected answer {resp.status_code} for {url}")
                    _check_space(total, out.have, free_bytes, url)
                    _stream(resp, out, total, report, free_bytes, url)
                if total is not None and out.have < total:
                    raise _Retry(f"the connection closed at {out.have} of {total} bytes")
                break
            except (httpx.TransportError, _Retry) as exc:
                failures += 1
                last_error = _describe(exc)
                limit = retries if connected else CONNECT_RETRIES
                if failures > limit:
                    if not connected:
                        raise HostError(f"cannot reach {url}: {last_error}", field="source") from None
                    got = f"{out.have} of {total} bytes" if total else f"{out.have} bytes"
                    raise HostError(f"download of {url} incomplete after {failures} attempts "
                                    f"({got}): {last_error}", field="source") from None
                report(out.have, total, f"connection lost ({last_error}); retrying "
                                        f"({failures}/{limit})")
                time.sleep(min(backoff * 2 ** (failures - 1), 5.0))
        out.finish()
    digest = out.hash.hexdigest() if out.hash is not None else None
    return Downloaded(out.have, digest, resumes, restarts)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in text.lower():
        return "connection refused"
    return text


def _check_space(total: int | None, have: int, free_bytes: Callable[[], int] | None, url: str) -> None:
    if total is None or free_bytes is None:
        return
    free = free_bytes()
    if total - have > free - FREE_MARGIN:
        raise InsufficientResources(
            f"{url} is {_human(total)}, more than the free space of the image store "
            f"({_human(max(0, free - FREE_MARGIN))} usable)")


def _stream(resp: httpx.Response, out: _Writer, total: int | None, report: Progress,
            free_bytes: Callable[[], int] | None, url: str) -> None:
    started, start_have = time.monotonic(), out.have
    last = 0.0
    next_check = out.have + FREE_CHECK_EVERY
    for chunk in resp.iter_raw():
        out.write(chunk)
        if total is not None and out.have > total:
            raise HostError(f"{url} sent more than the {total} bytes it announced")
        if total is None and free_bytes is not None and out.have >= next_check:
            next_check = out.have + FREE_CHECK_EVERY
            if free_bytes() < FREE_MARGIN:
                raise InsufficientResources(
                    f"the image store is full after {_human(out.have)} of {url}")
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S:
            last = now
            rate = (out.have - start_have) / max(now - started, 1e-6)
            of = f" of {_human(total)}" if total else ""
            report(out.have, total, f"downloading {_human(out.have)}{of} ({rate / (1 << 20):.0f} MiB/s)")
