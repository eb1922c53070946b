"""The engine's real AgentClient against the agent's real routes, in process: an httpx
transport that serves each request with a FastAPI app (the agent's routers), noting it."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient


def in_process(app: FastAPI, note: Callable[[httpx.Request], None] | None = None
               ) -> httpx.MockTransport:
    """Serve requests with ``app``; ``note(request)`` sees each one first."""
    served = TestClient(app, base_url="http://agent")

    def handle(request: httpx.Request) -> httpx.Response:
        if note is not None:
            note(request)
        resp = served.request(request.method, str(request.url), content=request.content,
                              headers=dict(request.headers))
        return httpx.Response(resp.status_code, content=resp.content, headers=resp.headers)

    return httpx.MockTransport(handle)


def noting_json(sent: list[tuple[str, str, object]]) -> Callable[[httpx.Request], None]:
    """A ``note`` keeping (method, path, JSON body or None) of each request in ``sent``."""
    def note(request: httpx.Request) -> None:
        sent.append((request.method, request.url.path,
                     json.loads(request.content) if request.content else None))

    return note


def noting_paths(seen: list[str]) -> Callable[[httpx.Request], None]:
    """A ``note`` keeping ``METHOD /path`` of each request in ``seen``."""
    return lambda request: seen.append(f"{request.method} {request.url.path}")
