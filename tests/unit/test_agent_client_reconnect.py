"""The engine's agent client waits for an agent that is restarting (refusing connections)
and reports one that stays down, on loopback with a real HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corral.engine.agent_client import AgentClient
from corral.errors import HostError


class _Hosts(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"name": "vm1", "uuid": "u1", "state": "running"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def late_server() -> Iterator[tuple[int, threading.Event]]:
    """A server that starts listening 1 s from now on a port that refuses until then."""
    port = _free_port()
    up = threading.Event()
    servers: list[ThreadingHTTPServer] = []

    def start() -> None:
        time.sleep(1.0)
        srv = ThreadingHTTPServer(("127.0.0.1", port), _Hosts)
        servers.append(srv)
        up.set()
        srv.serve_forever(poll_interval=0.1)

    threading.Thread(target=start, daemon=True).start()
    yield port, up
    up.wait(5)
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_a_restarting_agent_is_waited_for(late_server: tuple[int, threading.Event]) -> None:
    port, up = late_server
    client = AgentClient(f"http://127.0.0.1:{port}", reconnect_s=10)
    assert client.domain("vm1").state == "running"
    assert up.is_set()


def test_the_reconcilers_poll_does_not_wait(late_server: tuple[int, threading.Event]) -> None:
    port, up = late_server
    client = AgentClient(f"http://127.0.0.1:{port}", reconnect_s=10)
    with pytest.raises(HostError, match="unreachable"):
        client.domains()
    assert not up.is_set()  # it failed before the agent came back


def test_an_agent_that_stays_down_is_reported() -> None:
    client = AgentClient(f"http://127.0.0.1:{_free_port()}", reconnect_s=0.5)
    with pytest.raises(HostError, match=r"agent at .* unreachable"):
        client.act("x", "start")
