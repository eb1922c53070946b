"""The web UI's idle timeout (engine/ui/session.py, services/auth.keep_session), on a clock
the test moves: a session unused for 30 minutes has expired, each use moves that on (at
most one write a minute), requests the page makes by itself do not count, 8 hours after
the login it ends whatever the use, and an open event stream ends with its session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from api_server import serving
from engine_seed import PASSWORD, engine_context
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from web_ui_login import add_user, sign_in

from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Token, Vm, utcnow
from corral.engine.routes import events as event_routes
from corral.engine.services import auth, users
from corral.engine.ui import session

BACKGROUND = {"X-Corral-Background": "1"}


class Clock:
    """The engine's clock for sessions (auth.utcnow), moved by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def wait(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


def _vm(s: Session, host: Host) -> None:
    image = s.query(Image).filter_by(name="tiny").one()
    s.add(Vm(name="plain", image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
             disk_bytes=64 << 20, state="stopped", desired_power="stopped"))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, prepare=_vm)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(auth, "utcnow", made)
    return made


def _login(ctx: EngineContext) -> TestClient:
    add_user(ctx, "ann")
    return sign_in(ctx, "ann")


def _logged_in(b: TestClient, path: str = "/", **headers: str) -> bool:
    resp = b.get(path, headers=headers, follow_redirects=False)
    assert resp.status_code in (200, 303, 401), resp.text[:300]
    return resp.status_code == 200


def _expires(ctx: EngineContext) -> datetime:
    with ctx.db.session() as s:
        found = s.query(Token.expires_at).filter_by(kind="session").scalar()
        assert found is not None
        return found


def test_an_idle_session_expires_and_use_keeps_it(ctx: EngineContext, clock: Clock) -> None:
    b = _login(ctx)
    assert _expires(ctx) == clock.now + session.IDLE
    clock.wait(20)
    assert _logged_in(b)  # used at 20 min: now idle until 50
    clock.wait(20)
    assert _logged_in(b, "/vms")  # 40 min after the login, 20 after the last use
    clock.wait(29)
    assert _logged_in(b, "/vms/plain")
    clock.wait(31)  # 31 minutes without a use
    resp = b.get("/vms", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/login?next=/vms"
    assert _expires(ctx) < clock.now  # the server decided; the cookie is still there
    assert session.SESSION_COOKIE in b.cookies


def test_what_the_page_asks_by_itself_keeps_no_session_alive(
        ctx: EngineContext, clock: Clock) -> None:
    b = _login(ctx)
    for _ in range(5):  # a live row and the task panel's history, every 5 minutes
        clock.wait(5)
        assert _logged_in(b, "/vms/plain/row", **BACKGROUND, **{"HX-Request": "true"})
        assert _logged_in(b, "/ui/events/recent", **BACKGROUND)
        assert _logged_in(b, "/vms/plain/row", accept="text/event-stream")  # as a stream
    clock.wait(6)  # 31 minutes after the last use by the user
    htmx = b.get("/vms/plain/row", headers={**BACKGROUND, "HX-Request": "true"},
                 follow_redirects=False)
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login")
    assert not _logged_in(b)


def test_uses_within_a_minute_write_nothing(ctx: EngineContext, clock: Clock) -> None:
    b = _login(ctx)
    first = _expires(ctx)
    clock.wait(0.5)
    assert _logged_in(b)
    assert _expires(ctx) == first  # half a minute behind: not written
    clock.wait(1)
    assert _logged_in(b)
    assert _expires(ctx) == clock.now + session.IDLE


def test_a_session_in_use_still_ends_eight_hours_after_the_login(
        ctx: EngineContext, clock: Clock) -> None:
    b = _login(ctx)
    with ctx.db.session() as s:
        created = s.query(Token.created_at).filter_by(kind="session").scalar()
    assert created is not None
    for _ in range(8 * 3 - 1):  # a use every 20 minutes, up to 7 h 40 min
        clock.wait(20)
        assert _logged_in(b)
    assert _expires(ctx) == created + session.TTL  # not 30 minutes on: the day's end
    clock.now = created + session.TTL - timedelta(seconds=1)
    assert _logged_in(b)
    clock.now = created + session.TTL
    assert not _logged_in(b)


def test_an_open_event_stream_ends_with_its_session(
        ctx: EngineContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page left open hears nothing once its session has ended (here: logged out
    elsewhere; an idle expiry is the same check), though it never sent a request."""
    monkeypatch.setattr(event_routes, "KEEP_ALIVE_S", 0.1)
    monkeypatch.setattr(event_routes, "RECHECK_S", 0.1)
    users.create(ctx, "ann", "admin", PASSWORD)
    secret, _ = auth.start_session(ctx, "ann", session.IDLE)
    cookie = {"Cookie": f"{session.SESSION_COOKIE}={secret}"}  # plain HTTP: not the jar's
    with serving(create_app(ctx)) as url, httpx.Client(base_url=url, timeout=10) as c, \
            c.stream("GET", "/ui/events", headers=cookie) as stream:
        assert stream.status_code == 200
        lines = (line for line in stream.iter_lines() if line)  # not the blank separators
        assert next(lines) == ": connected"
        assert next(lines) == ": keep-alive"  # still there while the session lasts
        with ctx.db.session() as s:
            token_id = s.query(Token.id).filter_by(kind="session").scalar()
        auth.revoke(ctx, str(token_id))
        deadline = time.monotonic() + 10
        for _ in lines:  # the engine ends it: the loop ends (no read timeout)
            assert time.monotonic() < deadline, "the stream outlived its session"
