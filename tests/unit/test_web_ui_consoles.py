"""The consoles in the browser without a browser (engine/ui/consoles.py, the tickets of
services/console_tickets.py and the agent's VNC relay): a console ticket is issued only to
a session with ``vm.console`` in the VM's project (and its CSRF token), opens one console
of one VM once and within 30 s; bad names and kinds are a 4xx. The browser tests (xterm.js,
noVNC against a real guest) are in tests/integration/test_web_ui.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_seed import engine_context
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from test_web_ui_session import _projects
from web_ui_login import add_user, csrf_of, logged_in

from corral.agent.vnc_relay import relay_vnc, vnc_address
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Vm
from corral.engine.services import console_tickets
from corral.errors import Unauthorized, WrongState


def _with_console_vms(s: Session, host: Host) -> None:
    _projects(s, host)  # a.web, b.web, plain
    image = s.query(Image).filter_by(name="tiny").one()
    s.add(Vm(name="a.box", image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
             disk_bytes=64 << 20, state="running", desired_power="running", project="a"))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, prepare=_with_console_vms)


def _ticket(b: TestClient, csrf: str, vm: str, kind: str = "serial") -> Any:
    return b.post(f"/vms/{vm}/console-ticket", data={"kind": kind},
                  headers={"X-CSRF-Token": csrf})


# -- tickets ----------------------------------------------------------------------------------

def test_a_ticket_opens_one_console_of_one_vm_once() -> None:
    serial = console_tickets.issue("a.web", "serial")
    console_tickets.redeem(serial, "a.web", "serial")
    with pytest.raises(Unauthorized, match="invalid or expired"):
        console_tickets.redeem(serial, "a.web", "serial")  # spent on first use
    vnc = console_tickets.issue("a.web", "vnc")
    with pytest.raises(Unauthorized, match="opens the vnc console, not the serial"):
        console_tickets.redeem(vnc, "a.web", "serial")
    with pytest.raises(Unauthorized):
        console_tickets.redeem(vnc, "a.web", "vnc")  # a refused try spends it too
    other = console_tickets.issue("a.web", "vnc")
    with pytest.raises(Unauthorized, match=r"for VM a\.web, not b\.web"):
        console_tickets.redeem(other, "b.web", "vnc")


def test_a_ticket_expires_after_30_s(monkeypatch: pytest.MonkeyPatch) -> None:
    ticket = console_tickets.issue("a.web", "vnc")
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + 31)  # the module's clock
    with pytest.raises(Unauthorized, match="expired"):
        console_tickets.redeem(ticket, "a.web", "vnc")


# -- the UI's ticket route and pages ----------------------------------------------------------

def test_the_session_gets_a_ticket_and_the_websockets_path(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b, csrf = logged_in(ctx, "ann")
    got = _ticket(b, csrf, "a.box", "vnc")
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["expires_in"] == 30 and body["ticket"].startswith("ct_")
    assert body["url"] == f"/api/v1/vms/box/vnc-websocket?project=a&ticket={body['ticket']}"
    serial = _ticket(b, csrf, "plain").json()
    assert serial["url"].startswith("/api/v1/vms/plain/console?project=default&ticket=ct_")
    console_tickets.redeem(body["ticket"], "a.box", "vnc")  # valid for that VM and console


def test_a_ticket_needs_the_csrf_token_and_a_session(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b, csrf = logged_in(ctx, "ann")
    refused = b.post("/vms/a.box/console-ticket", data={"kind": "serial"})
    assert refused.status_code == 403 and "Request refused" in refused.text
    stranger = TestClient(b.app, base_url="https://testserver")
    assert _ticket(stranger, csrf, "a.box").status_code == 403  # no session: no CSRF match


def test_another_projects_user_gets_no_ticket_and_a_viewer_none(ctx: EngineContext) -> None:
    add_user(ctx, "bob", "user", project="b")
    b, csrf = logged_in(ctx, "bob")
    assert _ticket(b, csrf, "a.box").status_code == 404  # as if there were no such VM
    assert b.get("/vms/a.box/console").status_code == 404
    assert b.get("/vms/a.box/display").status_code == 404
    assert _ticket(b, csrf, "b.web").status_code == 200  # its own project's
    add_user(ctx, "vic", "viewer", project="a")
    v, vcsrf = logged_in(ctx, "vic")
    denied = _ticket(v, vcsrf, "a.box")
    assert denied.status_code == 403 and "vm.console" in denied.text
    assert "Consoles:" not in v.get("/vms/a.box").text  # no links to what it may not open


def test_bad_names_and_kinds_are_a_4xx(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b, csrf = logged_in(ctx, "ann")
    for name in ("nope", "a.nope", "x" * 300, "..%2F..%2Fetc", "a.b.c"):
        answer = _ticket(b, csrf, name)
        assert 400 <= answer.status_code < 500, (name, answer.status_code)
        page = b.get(f"/vms/{name}/console")
        assert 400 <= page.status_code < 500, (name, page.status_code)
    bad = _ticket(b, csrf, "a.box", "spice")
    assert bad.status_code == 422 and "kind" in bad.text


def test_the_console_pages_link_their_scripts_and_each_other(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b, _ = logged_in(ctx, "ann")
    vm_page = b.get("/vms/a.box").text
    assert 'href="/vms/a.box/console"' in vm_page and 'href="/vms/a.box/display"' in vm_page
    serial = b.get("/vms/a.box/console")
    assert serial.status_code == 200
    assert "/static/vendor/xterm/xterm.js" in serial.text and 'id="terminal"' in serial.text
    assert 'data-ticket-url="/vms/a.box/console-ticket"' in serial.text
    # xterm.js styles its rows with <style> elements: inline styles on this page only
    assert "style-src 'self' 'unsafe-inline'" in serial.headers["content-security-policy"]
    assert "script-src 'self';" in serial.headers["content-security-policy"]
    display = b.get("/vms/a.box/display")
    assert display.status_code == 200 and 'src="/static/display.js"' in display.text
    assert "style-src 'self';" in display.headers["content-security-policy"]
    assert csrf_of(display.text)
    badge = b.get("/vms/a.box/console-state")  # what the event stream fetches again
    assert badge.status_code == 200 and 'data-live-vm="a.box"' in badge.text and "running" in badge.text


# -- the agent's VNC relay ----------------------------------------------------------------------

def test_the_relay_reaches_vnc_on_loopback_only() -> None:
    assert vnc_address([{"type": "vnc", "port": 5901, "listen": "127.0.0.1"}]) == ("127.0.0.1", 5901)
    assert vnc_address([{"type": "vnc", "port": 5901, "listen": "0.0.0.0"}]) == ("127.0.0.1", 5901)
    assert vnc_address([{"type": "vnc", "port": 5901, "listen": "::1"}]) == ("::1", 5901)
    assert vnc_address([{"type": "vnc", "port": 5901, "listen": "192.0.2.7"}]) is None
    assert vnc_address([{"type": "vnc", "port": -1, "listen": "127.0.0.1"}]) is None
    assert vnc_address([{"type": "spice", "port": 5901, "listen": "127.0.0.1"}]) is None
    assert vnc_address([]) is None


class _FakeDisplay:
    """A TCP server on loopback standing in for QEMU's VNC: greets as RFB does, then echoes."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        while data := await reader.read(1024):
            writer.write(b"echo:" + data)
        writer.close()

    def _run(self) -> None:
        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._stop = self._loop.create_future()
            self._ready.set()
            async with server:
                await self._stop

        self._loop.run_until_complete(main())

    def __enter__(self) -> _FakeDisplay:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        def done() -> None:
            if self._stop is not None and not self._stop.done():
                self._stop.set_result(None)
        self._loop.call_soon_threadsafe(done)
        self._thread.join(10)


class _FakeHv:
    def __init__(self, port: int) -> None:
        self.port = port

    def graphics(self, name: str) -> list[dict[str, Any]]:
        if name != "web":
            raise WrongState(f"VM {name} is not running: it has no display now")
        return [{"type": "vnc", "port": self.port, "listen": "127.0.0.1"}]


class _FakeSocket:
    """The engine's side of the agent's WebSocket: says ``hello``, then leaves."""

    def __init__(self) -> None:
        self.accepted = False
        self.closed: int | None = None
        self.got: list[bytes] = []
        self._incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def accept(self) -> None:
        self.accepted = True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = self.closed or code

    async def send_bytes(self, data: bytes) -> None:
        self.got.append(data)
        if data.startswith(b"RFB"):
            await self._incoming.put({"type": "websocket.receive", "bytes": b"hello"})
        elif data.startswith(b"echo:"):
            await self._incoming.put({"type": "websocket.disconnect"})

    async def receive(self) -> dict[str, Any]:
        return await self._incoming.get()


def test_the_agent_relays_the_display_and_refuses_a_stopped_vm() -> None:
    with _FakeDisplay() as display:
        hv: Any = _FakeHv(display.port)
        ws = _FakeSocket()
        asyncio.run(asyncio.wait_for(relay_vnc(ws, hv, "web"), 10))  # type: ignore[arg-type]
        assert ws.accepted and ws.got == [b"RFB 003.008\n", b"echo:hello"]
        stopped = _FakeSocket()
        asyncio.run(asyncio.wait_for(relay_vnc(stopped, hv, "other"), 10))  # type: ignore[arg-type]
        assert not stopped.accepted and stopped.closed == 4409
