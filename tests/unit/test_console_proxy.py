"""The engine's console relay (client WebSocket <-> engine <-> agent WebSocket), against a
real WebSocket server on loopback standing in for the agent's console: bytes pass both
ways, and the relay ends cleanly whichever side leaves first."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from engine_seed import admin_client, seed_node
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.server import ServerConnection, serve

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Vm
from corral.engine.services import console_tickets


class FakeConsole:
    """An agent console endpoint on 127.0.0.1: echoes what it gets as ``echo:...``; a
    ``bye`` makes it close the connection, as a console whose domain stopped."""

    def __init__(self) -> None:
        self.port = 0
        self.sessions = 0
        self.closed = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handler(self, conn: ServerConnection) -> None:
        self.sessions += 1
        try:
            async for msg in conn:
                data = msg if isinstance(msg, bytes) else msg.encode()
                if data == b"bye":
                    return
                await conn.send(b"echo:" + data)
        finally:
            self.closed += 1

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            async with serve(self._handler, "127.0.0.1", 0) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                self._stop = self._loop.create_future()
                self._ready.set()
                await self._stop

        self._loop.run_until_complete(main())

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        def done() -> None:
            if self._stop is not None and not self._stop.done():
                self._stop.set_result(None)
        self._loop.call_soon_threadsafe(done)
        self._thread.join(10)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[TestClient, FakeConsole]]:
    fake = FakeConsole()
    fake.start()
    ctx: EngineContext = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        host.url = f"http://127.0.0.1:{fake.port}"
        image = s.query(Image).filter_by(name="tiny").one()
        s.add(Vm(name="web", state="running", host_id=host.id, image_id=image.id,
                 memory_mib=128, cpus=1, disk_bytes=64 << 20))
    client = admin_client(ctx)
    try:
        yield client, fake
    finally:
        client.close()
        fake.stop()


def test_bytes_pass_both_ways_and_each_session_ends(
        relay: tuple[TestClient, FakeConsole]) -> None:
    client, fake = relay
    for i in range(5):  # one after another, as `corral vm console` runs
        with client.websocket_connect("/api/v1/vms/web/console") as ws:
            ws.send_bytes(f"ls {i}".encode())
            assert ws.receive_bytes() == f"echo:ls {i}".encode()
            ws.send_text("text frames too")
            assert ws.receive_bytes() == b"echo:text frames too"
    assert fake.sessions == 5
    _wait(lambda: fake.closed == 5)  # the client left: the engine closed each upstream


def test_the_console_closing_ends_the_client_session(
        relay: tuple[TestClient, FakeConsole]) -> None:
    client, fake = relay
    with client.websocket_connect("/api/v1/vms/web/console") as ws:
        ws.send_bytes(b"bye")
        with pytest.raises(WebSocketDisconnect):
            ws.receive_bytes()
    assert fake.closed == 1


def test_unknown_vm_and_bad_token_are_refused(relay: tuple[TestClient, FakeConsole]) -> None:
    client, fake = relay
    with pytest.raises(WebSocketDisconnect) as missing, \
            client.websocket_connect("/api/v1/vms/nope/console") as ws:
        ws.receive_bytes()
    assert missing.value.code == 4404
    with pytest.raises(WebSocketDisconnect) as denied, \
            client.websocket_connect("/api/v1/vms/web/console",
                                     headers={"Authorization": "Bearer wrong"}) as ws:
        ws.receive_bytes()
    assert denied.value.code == 4401
    assert fake.sessions == 0


def _wait(check: Callable[[], bool], tries: int = 100) -> None:
    for _ in range(tries):
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met within 5 s")


def _refused(client: TestClient, path: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(WebSocketDisconnect) as closed, \
            client.websocket_connect(path, headers=headers) as ws:
        ws.receive_bytes()
    return closed.value.code


def test_the_token_only_as_a_bearer_header_never_bare_nor_in_the_url(
        relay: tuple[TestClient, FakeConsole]) -> None:
    client, fake = relay
    token = client.headers["authorization"].removeprefix("Bearer ")
    bare = {"Authorization": token}
    assert _refused(client, "/api/v1/vms/web/console", bare) == 4401
    assert _refused(client, f"/api/v1/vms/web/console?token={token}",
                    {"Authorization": ""}) == 4401
    assert fake.sessions == 0


def test_a_console_ticket_opens_one_session_of_its_vm_only(
        relay: tuple[TestClient, FakeConsole], monkeypatch: pytest.MonkeyPatch) -> None:
    client, fake = relay
    none = {"Authorization": ""}  # as a browser: no header on the WebSocket
    assert client.post("/api/v1/vms/nope/console-ticket").status_code == 404
    got = client.post("/api/v1/vms/web/console-ticket")
    assert got.status_code == 200 and got.json()["expires_in"] == 30
    ticket = got.json()["ticket"]
    with client.websocket_connect(f"/api/v1/vms/web/console?ticket={ticket}",
                                  headers=none) as ws:
        ws.send_bytes(b"hi")
        assert ws.receive_bytes() == b"echo:hi"
    assert fake.sessions == 1
    # used up; one for another VM; one past its time
    assert _refused(client, f"/api/v1/vms/web/console?ticket={ticket}", none) == 4401
    other = client.post("/api/v1/vms/web/console-ticket").json()["ticket"]
    assert _refused(client, f"/api/v1/vms/nope/console?ticket={other}", none) == 4401
    late = client.post("/api/v1/vms/web/console-ticket").json()["ticket"]
    real = time.monotonic
    monkeypatch.setattr(console_tickets.time, "monotonic", lambda: real() + 31)
    assert _refused(client, f"/api/v1/vms/web/console?ticket={late}", none) == 4401
    assert fake.sessions == 1


def test_a_vnc_ticket_opens_the_display_socket_and_nothing_else(
        relay: tuple[TestClient, FakeConsole]) -> None:
    client, fake = relay
    none = {"Authorization": ""}
    vnc = client.post("/api/v1/vms/web/console-ticket?kind=vnc").json()["ticket"]
    with client.websocket_connect(f"/api/v1/vms/web/vnc-websocket?ticket={vnc}",
                                  headers=none) as ws:
        ws.send_bytes(b"RFB")
        assert ws.receive_bytes() == b"echo:RFB"
    serial = client.post("/api/v1/vms/web/console-ticket").json()["ticket"]
    assert _refused(client, f"/api/v1/vms/web/vnc-websocket?ticket={serial}", none) == 4401
    other = client.post("/api/v1/vms/web/console-ticket?kind=vnc").json()["ticket"]
    assert _refused(client, f"/api/v1/vms/web/console?ticket={other}", none) == 4401
    assert client.post("/api/v1/vms/web/console-ticket?kind=spice").status_code == 422
    assert fake.sessions == 1
