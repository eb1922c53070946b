"""The engine's real API served by uvicorn on a loopback port, in a thread, for tests that
need requests really in flight at once (the concurrency and parsing-bounds suites), and a
stand-in host that answers every agent request at once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

LIST_ROUTES = ("leases", "volumes", "disks", "snapshots", "ports", "nics", "domains")


class QuickHost:
    """An agent that says yes to everything: answers carry the fields every answer model
    needs (models ignore the rest); a started job has already failed, so operations end
    quickly and their failure paths run. Once ``close``d, requests from operation
    workers wait until it is ``open`` again (at most 30 s): operations stay in flight while
    a test fires requests; requests made while serving an API call (dry runs) are answered."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self.broken = False  # operation workers' requests get a 500, as from a failing host

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if threading.current_thread().name.startswith("op"):  # OperationRunner's workers
            self._open.wait(30)
            if self.broken:
                return httpx.Response(500, json={"error": {"code": "host_error",
                                                           "message": "the host failed"}})
        return quick_answer(req)


def quick_answer(req: httpx.Request) -> httpx.Response:
    last = req.url.path.rstrip("/").rsplit("/", 1)[-1]
    if req.method == "GET" and last in LIST_ROUTES:
        return httpx.Response(200, json=[])
    parts = req.url.path.strip("/").split("/")
    if req.method == "GET" and len(parts) == 5 and parts[3] == "volumes":
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no volume"}})
    name = last
    body: dict[str, Any] = {
        "ok": True, "deleted": True, "created": True, "bridge": True,
        "name": name, "uuid": name, "vm_id": None, "state": "stopped", "path": f"/s/{name}",
        "size": 1 << 20, "format": "qcow2", "virtual_size": 1 << 20, "file_size": 1 << 20,
        "source": f"/s/{name}", "capacity": 1 << 40, "allocation": 0, "available": 1 << 40, "tap": "tap0",
        "id": "job-1", "kind": "fake", "key": name, "status": "failure", "version": 1,
        "error": {"code": "host_error", "message": "the stand-in host does no work"},
    }
    return httpx.Response(200, json=body)


@contextmanager
def serving(app: ASGIApp, port: int = 0, **tls: Any) -> Iterator[str]:
    """``app`` served on 127.0.0.1 (``port``, or a free one) while the block runs; its base
    URL. ``tls``: uvicorn's TLS settings (ssl_certfile, ssl_context_factory, ...): HTTPS."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **tls))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test API server did not start")
            time.sleep(0.02)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
