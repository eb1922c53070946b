"""`POST /api/v1/login` and `/logout`: a session token for a right password; one answer
for a wrong password and an unknown user; failed logins slowed down, then locked, per user
and per client address, but never the admin at the host's own console (loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.services import login_guard, users
from corral.engine.services.login_guard import LOCK_AFTER, guard_of
from corral.errors import RateLimited

PASSWORD = "correct horse battery"


class Clock:
    """The guard's clock, moved by the test (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    users.create(ctx, "alice", "user", PASSWORD)
    users.ensure_admin(ctx, PASSWORD)
    yield ctx
    ctx.ops.shutdown()


@pytest.fixture
def clock(ctx: EngineContext) -> Clock:
    c = Clock()
    guard_of(ctx).clock = c
    return c


def post_login(ctx: EngineContext, user: str, password: str,
               address: str = "192.0.2.7") -> tuple[int, dict[str, object]]:
    client = TestClient(create_app(ctx), client=(address, 40000))
    resp = client.post("/api/v1/login", json={"username": user, "password": password})
    return resp.status_code, resp.json()


def test_a_right_password_gives_a_session_token_that_logout_revokes(ctx: EngineContext) -> None:
    status, body = post_login(ctx, "alice", PASSWORD)
    assert status == 200 and body["user"] == "alice" and body["role"] == "user"
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {body['token']}"})
    me = client.get("/api/v1/whoami").json()
    assert me["user"] == "alice" and me["kind"] == "session"
    assert client.post("/api/v1/logout").status_code == 204
    assert client.get("/api/v1/whoami").status_code == 401  # refused at once


def test_wrong_password_and_unknown_user_get_the_same_401(ctx: EngineContext, clock: Clock) -> None:
    wrong = post_login(ctx, "alice", "not the password")
    unknown = post_login(ctx, "nobody", "not the password", address="192.0.2.8")
    assert wrong[0] == unknown[0] == 401
    assert wrong[1] == unknown[1]
    assert "token" not in wrong[1]


def test_failures_slow_a_user_down_then_lock_it(ctx: EngineContext, clock: Clock) -> None:
    statuses = []
    for i in range(LOCK_AFTER):
        clock.now += 120  # each try after the delay the last one imposed (up to 60 s)
        statuses.append(post_login(ctx, "alice", "guess", address=f"192.0.2.{i + 10}")[0])
    assert statuses == [401] * LOCK_AFTER  # every guess was heard, and wrong
    clock.now += 120
    status, body = post_login(ctx, "alice", PASSWORD, address="192.0.2.99")
    assert status == 429  # locked: even the right password, from another address
    assert body["error"]["code"] == "rate_limited"  # type: ignore[index]
    clock.now += login_guard.LOCK_S + 1
    assert post_login(ctx, "alice", PASSWORD, address="192.0.2.99")[0] == 200


def test_a_quick_retry_after_a_few_failures_waits(ctx: EngineContext, clock: Clock) -> None:
    for _ in range(login_guard.FREE_FAILURES):
        assert post_login(ctx, "alice", "guess")[0] == 401  # no delay yet
    status, body = post_login(ctx, "alice", PASSWORD)  # at once: too soon
    assert status == 429
    assert body["error"]["details"]["retry_after_s"] >= 1  # type: ignore[index]
    clock.now += 60
    assert post_login(ctx, "alice", PASSWORD)[0] == 200  # and success starts over


def test_one_address_guessing_many_users_is_held_back(ctx: EngineContext, clock: Clock) -> None:
    for i in range(login_guard.FREE_FAILURES):
        assert post_login(ctx, f"user{i}", "guess")[0] == 401
    assert post_login(ctx, "alice", PASSWORD)[0] == 429  # the address waits
    assert post_login(ctx, "alice", PASSWORD, address="192.0.2.200")[0] == 200


def test_the_admin_at_the_hosts_console_is_never_locked_out(
        ctx: EngineContext, clock: Clock) -> None:
    for _ in range(LOCK_AFTER + 2):  # from the network: locked
        post_login(ctx, "admin", "guess", address="198.51.100.1")
    assert post_login(ctx, "admin", PASSWORD, address="198.51.100.1")[0] == 429
    for _ in range(LOCK_AFTER + 2):  # from loopback: many failures, no delay, no lock
        assert post_login(ctx, "admin", "guess", address="127.0.0.1")[0] == 401
    assert post_login(ctx, "admin", PASSWORD, address="127.0.0.1")[0] == 200
    assert post_login(ctx, "admin", PASSWORD, address="::1")[0] == 200


def test_a_login_body_is_checked(ctx: EngineContext) -> None:
    client = TestClient(create_app(ctx))
    assert client.post("/api/v1/login", json={"username": "alice"}).status_code == 422
    assert client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD,
                                              "extra": 1}).status_code == 422


def test_a_spray_of_names_is_remembered_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    guard = login_guard.LoginGuard(clock)
    monkeypatch.setattr(login_guard, "MAX_RECORDS", 50)
    for i in range(200):
        clock.now += 1
        guard.attempt(f"name{i}", None)
    assert len(guard._records) <= 50
    guard.attempt("name199", None)  # the newest are kept: still counted
    guard.attempt("name199", None)
    with pytest.raises(RateLimited):
        guard.attempt("name199", None)


def test_guesses_sent_at_once_are_held_back_as_if_one_by_one() -> None:
    guard = login_guard.LoginGuard(Clock())  # the clock stands still: all at once
    for _ in range(login_guard.FREE_FAILURES):
        guard.attempt("alice", "192.0.2.7")  # in flight, none answered yet
    with pytest.raises(RateLimited):
        guard.attempt("alice", "192.0.2.7")
    guard.succeeded("alice", "192.0.2.7")  # one of them had the password
    guard.attempt("alice", "192.0.2.7")
