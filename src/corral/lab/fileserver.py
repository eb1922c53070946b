"""A small HTTP file server for tests, benchmarks and lab demos (loopback by default).

Serves the files of one directory with GET and HEAD, single byte ranges (``Range:
bytes=A-B``, ``A-``, ``-N``; ``If-Range``), ``ETag``/``Last-Modified`` and ``sendfile(2)``,
so that it is never the slow end of a download. The query string of a URL asks for a fault,
which lets one server play every bad server a downloader must survive::

    ?drop=N      close the connection after N bytes of the body, on the first request of
                 this URL only (a dropped connection: the client may resume with Range)
    ?truncate=N  every response stops at byte N of the file and the connection is closed
                 (a server that never delivers the whole file)
    ?norange=1   ignore Range: always answer 200 with the whole file
    ?rate=B      send at most B bytes a second (a slow server)
    ?length=N    announce Content-Length N whatever the file's size (a lying server)

``python -m corral.lab.fileserver ROOT [--bind 127.0.0.1] [--port 0]`` prints the port it
listens on, alone on the first line of stdout, then serves until it is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, bind: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root).resolve()
        self.dropped: set[str] = set()  # URLs whose ?drop already happened
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.lock = threading.Lock()
        super().__init__((bind, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, name: str, query: str = "") -> str:
        host = str(self.server_address[0])
        return f"http://{host}:{self.port}/{name}" + (f"?{query}" if query else "")


class _Handler(BaseHTTPRequestHandler):
    server: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read ``server.requests`` instead."""

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.server.lock:
            self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        path = (self.server.root / unquote(parts.path).lstrip("/")).resolve()
        if self.server.root not in path.parents or not path.is_file():
            self._error(404, "Not Found")
            return
        st = path.stat()
        size = st.st_size
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and "norange" not in query and (if_range is None or if_range == etag):
            m = _RANGE_RE.match(wanted.strip())
            if m is None or m.groups() == ("", ""):
                self._error(416, "Range Not Satisfiable", size)
                return
            a, b = m.groups()
            if a == "":
                start, end = max(0, size - int(b)), size - 1
            else:
                start, end = int(a), min(int(b), size - 1) if b else size - 1
            if start >= size or start > end:
                self._error(416, "Range Not Satisfiable", size)
                return
            status = 206
        count = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if "norange" in query else "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("Content-Length", query.get("length", str(count)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body or count == 0:
            return
        stop = start + count
        if "truncate" in query:
            stop = min(stop, int(query["truncate"]))
        if "drop" in query:
            with self.server.lock:
                first = self.path not in self.server.dropped
                self.server.dropped.add(self.path)
            if first:
                stop = min(stop, start + int(query["drop"]))
        rate = int(query["rate"]) if "rate" in query else None
        with contextlib.suppress(OSError), path.open("rb") as f:
            self._send(f.fileno(), start, stop, rate)
        if stop < start + count:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, fd: int, start: int, stop: int, rate: int | None) -> None:
        self.wfile.flush()
        sock = self.connection.fileno()
        offset = start
        step = max(1, min(1 << 16, rate // 10)) if rate else 1 << 24
        t0 = time.monotonic()
        while offset < stop:
            sent = os.sendfile(sock, fd, offset, min(step, stop - offset))
            if sent == 0:
                return
            offset += sent
            if rate:
                ahead = (offset - start) / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

    def _error(self, code: int, reason: str, size: int | None = None) -> None:
        body = f"{code} {reason}\n".encode()
        self.send_response(code, reason)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if size is not None:
            self.send_header("Content-Range", f"bytes */{size}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@contextlib.contextmanager
def serving(root: Path, bind: str = "127.0.0.1", port: int = 0) -> Iterator[FileServer]:
    """A FileServer in a thread of this process, shut down on exit."""
    server = FileServer(root, bind, port)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fileserver",
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("root", type=Path, help="directory whose files are served")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    args = p.parse_args(argv)
    server = FileServer(args.root, args.bind, args.port)
    print(server.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
