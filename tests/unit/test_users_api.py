"""Users and API tokens through the API: what an admin and a user see and may do; no GET
ever returns a password hash or a token's secret; a token never does more than its user;
revoked and expired tokens are refused at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from engine_seed import PASSWORD, login
from starlette.testclient import TestClient

from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import Token, User, utcnow
from corral.engine.services import users


def test_an_admin_creates_lists_changes_and_deletes_a_user(admin: TestClient) -> None:
    made = admin.post("/api/v1/users", json={"name": "alice", "role": "operator",
                                             "password": PASSWORD})
    assert made.status_code == 201, made.text
    assert made.json()["role"] == "operator" and made.json()["has_password"] is True
    assert [u["name"] for u in admin.get("/api/v1/users").json()] == ["alice"]
    assert admin.post("/api/v1/users", json={"name": "alice"}).status_code == 409
    assert admin.patch("/api/v1/users/alice", json={"role": "viewer"}).json()["role"] == "viewer"
    assert admin.delete("/api/v1/users/alice").status_code == 204
    assert admin.get("/api/v1/users/alice").status_code == 404


def test_bad_user_input_is_a_clear_422(admin: TestClient) -> None:
    for body, field in [({"name": "Bad Name"}, "name"), ({"name": "bob", "role": "god"}, "role"),
                        ({"name": "bob", "password": "short"}, "password")]:
        resp = admin.post("/api/v1/users", json=body)
        assert resp.status_code == 422, body
        assert field in str(resp.json()["error"]), resp.json()


def test_no_get_returns_a_password_hash_or_a_token_secret(
        ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/users", json={"name": "alice", "role": "user", "password": PASSWORD})
    alice = login(ctx, "alice")
    secret = alice.post("/api/v1/tokens", json={"name": "ci"}).json()["token"]
    with ctx.db.session() as s:
        pw_hash = s.query(User).filter_by(name="alice").one().password_hash
        token_hashes = [t.secret_hash for t in s.query(Token).all()]
    assert pw_hash is not None and pw_hash.startswith("$argon2id$")
    spec = admin.get("/openapi.json").json()
    reads = [path.replace("{name}", "alice") for path, ops in spec["paths"].items()
             if "get" in ops and path != "/api/v1/events" and "{" not in path.replace(
                 "{name}", "")]  # every read of the API that needs no other name
    assert "/api/v1/users/alice/tokens" in reads and "/api/v1/vms" in reads
    bodies = [admin.get(p).text for p in reads]
    bodies += [alice.get(p).text for p in ("/api/v1/tokens", "/api/v1/whoami")]
    for body in bodies:
        assert "argon2" not in body and pw_hash not in body and secret not in body
        assert not any(h in body for h in token_hashes)
        assert PASSWORD not in body


def test_a_token_never_does_more_than_its_user(ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/users", json={"name": "bob", "role": "user", "password": PASSWORD})
    bob = login(ctx, "bob")
    too_much = bob.post("/api/v1/tokens", json={"name": "ci", "role": "admin"})
    assert too_much.status_code == 403
    made = bob.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"})
    assert made.status_code == 201 and made.json()["role"] == "viewer"
    ci = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {made.json()['token']}"})
    assert ci.get("/api/v1/whoami").json()["role"] == "viewer"
    assert ci.post("/api/v1/vms", json={}).status_code == 403  # viewer: no creates
    # the user's role caps its tokens at once: a demoted user's tokens lose rights
    assert bob.post("/api/v1/vms", json={}).status_code == 422
    admin.patch("/api/v1/users/bob", json={"role": "viewer"})
    assert bob.post("/api/v1/vms", json={}).status_code == 403
    assert bob.get("/api/v1/whoami").json()["role"] == "viewer"


def test_tokens_are_listed_revoked_and_refused_at_once(ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/users", json={"name": "carol", "role": "user", "password": PASSWORD})
    carol = login(ctx, "carol")
    made = carol.post("/api/v1/tokens", json={"name": "ci", "expires_in_s": 3600}).json()
    assert made["role"] == "user" and made["expires_at"] is not None
    ci = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {made['token']}"})
    assert ci.get("/api/v1/vms").status_code == 200
    listed = {t["name"]: t for t in carol.get("/api/v1/tokens").json()}
    assert listed["ci"]["last_used_at"] is not None  # the use above was recorded
    assert {t["kind"] for t in listed.values()} == {"api", "session"}
    assert carol.post("/api/v1/tokens", json={"name": "ci"}).status_code == 409
    assert carol.delete("/api/v1/tokens/ci").status_code == 204
    assert ci.get("/api/v1/vms").status_code == 401
    assert carol.delete("/api/v1/tokens/ci").status_code == 404


def test_an_expired_token_is_refused_at_once(ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/users", json={"name": "dave", "role": "user", "password": PASSWORD})
    dave = login(ctx, "dave")
    assert dave.get("/api/v1/vms").status_code == 200
    with ctx.db.session() as s:  # its 12 hours have passed
        for tok in s.query(Token).filter_by(kind="session").all():
            tok.expires_at = utcnow() - timedelta(seconds=1)
    resp = dave.get("/api/v1/vms")
    assert resp.status_code == 401 and "expired" in resp.json()["error"]["message"]


def test_deleting_a_user_ends_its_tokens_and_the_last_admin_stays(
        ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/users", json={"name": "erin", "role": "admin", "password": PASSWORD})
    erin = login(ctx, "erin")
    assert erin.delete("/api/v1/users/erin").status_code == 409  # the only admin user
    admin.post("/api/v1/users", json={"name": "frank", "role": "admin", "password": PASSWORD})
    assert erin.delete("/api/v1/users/frank").status_code == 204
    assert admin.delete("/api/v1/users/erin").status_code == 409  # erin is the last admin again
    admin.patch("/api/v1/users/erin", json={"role": "user"})  # allowed: it is not a delete
    assert erin.get("/api/v1/users").status_code == 403


def test_a_password_change_ends_the_users_sessions(ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/users", json={"name": "gina", "role": "user", "password": PASSWORD})
    gina = login(ctx, "gina")
    wrong = gina.put("/api/v1/password", json={"password": "new password 1",
                                               "current_password": "nope nope"})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "current_password"
    assert gina.put("/api/v1/password", json={"password": "new password 1",
                                              "current_password": PASSWORD}).status_code == 204
    assert gina.get("/api/v1/vms").status_code == 401  # its session ended
    login(ctx, "gina", "new password 1")
    assert admin.put("/api/v1/users/gina/password",
                     json={"password": "reset by admin"}).status_code == 204
    login(ctx, "gina", "reset by admin")


def test_an_engine_token_has_no_tokens_of_its_own(admin: TestClient) -> None:
    me = admin.get("/api/v1/whoami").json()
    assert me["user"] is None and me["role"] == "admin" and "user.create" in me["permissions"]
    resp = admin.post("/api/v1/tokens", json={"name": "ci"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "token"


def test_the_admin_made_at_first_start_owns_the_engine_token(ctx: EngineContext) -> None:
    from corral.engine.services.auth import authenticate, create_token

    secret = create_token(ctx, "admin")  # a node from before users: its token has no user
    password = users.ensure_admin(ctx)
    assert password is not None and len(password) >= 8
    assert users.ensure_admin(ctx) is None  # made once, shown once
    assert authenticate(ctx, secret).user == "admin"
    login(ctx, "admin", password)


def test_an_admin_makes_tokens_for_a_service_user_within_its_role(
        ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/users", json={"name": "backup", "role": "user"})  # no password
    assert TestClient(create_app(ctx)).post(
        "/api/v1/login", json={"username": "backup", "password": "anything at all"}
    ).status_code == 401
    assert admin.post("/api/v1/users/backup/tokens",
                      json={"name": "cron", "role": "operator"}).status_code == 403
    made = admin.post("/api/v1/users/backup/tokens", json={"name": "cron"})
    assert made.status_code == 201 and made.json()["role"] == "user"
    cron = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {made.json()['token']}"})
    assert cron.get("/api/v1/whoami").json()["user"] == "backup"
    assert [t["name"] for t in admin.get("/api/v1/users/backup/tokens").json()] == ["cron"]
    # an API token is not a session: logout does not revoke it (token revoke does)
    assert cron.post("/api/v1/logout").status_code == 422
    assert admin.delete("/api/v1/users/backup/tokens/cron").status_code == 204
    assert cron.get("/api/v1/whoami").status_code == 401


def test_concurrent_creates_of_one_name_get_one_winner_and_409s(ctx: EngineContext) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from corral.engine.services.auth import create_token
    from corral.errors import Conflict

    def outcome(fn: Callable[[], object]) -> str:
        try:
            fn()
            return "made"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        made_users = list(pool.map(lambda _: outcome(
            lambda: users.create(ctx, "twin", "user", None)), range(8)))
        made_tokens = list(pool.map(lambda _: outcome(
            lambda: create_token(ctx, "ci", "user", user="twin", replace=False)), range(8)))
    assert sorted(made_users) == ["conflict"] * 7 + ["made"]
    assert sorted(made_tokens) == ["conflict"] * 7 + ["made"]
