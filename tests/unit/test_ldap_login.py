"""LDAP logins against a real slapd (Debian's package; tests/unit/slapd_server.py): a
directory user logs in with its directory password and gets the roles its groups map to,
again at each login (a group change counts at the next one); a wrong password and an
unknown user get the same 401 as local users; a directory that is down is a clear 503 and
local users still log in; the bind password never comes back; `corral auth ldap`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_server import serving
from engine_seed import admin_client
from slapd_server import BASE, SERVICE_DN, USERS, Slapd, free_port, group_dn, running_slapd
from starlette.testclient import TestClient
from typer.testing import CliRunner

from corral.cli.main import app as cli_app
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import User
from corral.engine.services import users
from corral.engine.services.auth import create_token
from corral.engine.services.login_guard import guard_of
from corral.node import paths

LOCAL_PASSWORD = "local password 1"
VMADMINS, WEBOPS = group_dn("vmadmins"), group_dn("webops")
WRONG = "wrong user name or password"
ENV = ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_CA", "CORRAL_DATA_DIR", "CORRAL_REMOTE")


@pytest.fixture(scope="module")
def slapd() -> Iterator[Slapd]:
    with running_slapd() as server:
        yield server


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    guard_of(ctx).clock = lambda: 1000.0  # time stands still: a held-back try stays held
    yield ctx
    ctx.ops.shutdown()


@pytest.fixture
def admin(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)


@pytest.fixture
def groups_restored(slapd: Slapd) -> Iterator[None]:
    """A test that changes group members puts them back (the server is the module's)."""
    yield
    slapd.set_members("vmadmins", ["alice"])
    slapd.set_members("webops", ["bob"])


def settings(slapd: Slapd, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "url": slapd.url, "bind_dn": SERVICE_DN, "bind_password": slapd.service_password,
        "base_dn": BASE, "group_map": [{"group": VMADMINS, "role": "admin", "project": "*"},
                                       {"group": WEBOPS, "role": "user", "project": "web"}]}
    body.update(over)
    return body


def configure(admin: TestClient, slapd: Slapd, **over: Any) -> dict[str, Any]:
    resp = admin.put("/api/v1/auth/ldap", json=settings(slapd, **over))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def login(ctx: EngineContext, name: str, password: str) -> Any:
    return TestClient(create_app(ctx)).post("/api/v1/login",
                                            json={"username": name, "password": password})


def row(ctx: EngineContext, name: str) -> tuple[str, str, list[Any], list[Any]]:
    with ctx.db.session() as s:
        u = s.query(User).filter_by(name=name).one()
        return u.source, u.role, list(u.groups), list(u.grants)


def test_a_directory_user_logs_in_with_the_roles_its_groups_map_to(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    configure(admin, slapd)
    alice = login(ctx, "alice", USERS["alice"])
    assert alice.status_code == 200, alice.text
    assert alice.json()["user"] == "alice" and alice.json()["role"] == "admin"
    source, role, groups, grants = row(ctx, "alice")
    assert (source, role) == ("ldap", "admin")
    assert VMADMINS in groups and group_dn("staff") in groups
    assert grants == [["admin", "*"]]
    session = TestClient(create_app(ctx),
                         headers={"Authorization": f"Bearer {alice.json()['token']}"})
    assert session.get("/api/v1/users").status_code == 200  # an admin's read
    # bob's only group grants a role on project web: no global role, the grant kept
    bob = login(ctx, "Bob", USERS["bob"])  # directories match names whatever their case
    assert bob.status_code == 200, bob.text
    assert bob.json()["user"] == "bob" and bob.json()["role"] == "none"
    assert row(ctx, "bob")[0::3] == ("ldap", [["user", "web"]])
    listed = {u["name"]: u for u in admin.get("/api/v1/users").json()}
    assert listed["alice"]["source"] == "ldap" and listed["alice"]["has_password"] is False
    # no local password beside the directory's
    reset = admin.put("/api/v1/users/alice/password", json={"password": LOCAL_PASSWORD})
    assert reset.status_code == 422 and "directory" in reset.json()["error"]["message"]


@pytest.mark.parametrize("only", ["group_attribute", "group_filter"])
def test_groups_come_from_memberof_or_from_a_group_search_alone(
        ctx: EngineContext, admin: TestClient, slapd: Slapd, only: str) -> None:
    off = "group_filter" if only == "group_attribute" else "group_attribute"
    configure(admin, slapd, **{off: None})
    assert admin.get("/api/v1/auth/ldap").json()[off] is None
    assert login(ctx, "alice", USERS["alice"]).json()["role"] == "admin"
    assert VMADMINS in row(ctx, "alice")[2]


def test_a_wrong_password_and_an_unknown_user_get_the_same_401(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    configure(admin, slapd)
    answers = [login(ctx, "alice", "not-her-password"), login(ctx, "nobody", "whatever-pw"),
               login(ctx, "*", USERS["alice"])]  # a filter wildcard matches no one
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert {a.json()["error"]["message"] for a in answers} == {WRONG}
    with ctx.db.session() as s:
        assert s.query(User).filter(User.name.in_(["nobody", "alice"])).count() == 0


def test_a_user_in_no_mapped_group_is_refused_with_a_clear_403(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    configure(admin, slapd)
    carol = login(ctx, "carol", USERS["carol"])  # in staff only, which maps to nothing
    assert carol.status_code == 403
    assert "none of your directory groups is mapped" in carol.json()["error"]["message"]
    with ctx.db.session() as s:
        assert s.query(User).filter_by(name="carol").count() == 0


def test_a_group_change_takes_effect_at_the_next_login(
        ctx: EngineContext, admin: TestClient, slapd: Slapd, groups_restored: None) -> None:
    configure(admin, slapd)
    first = login(ctx, "alice", USERS["alice"])
    assert first.json()["role"] == "admin"
    slapd.set_members("vmadmins", ["bob"])  # alice leaves vmadmins, joins webops
    slapd.set_members("webops", ["alice", "bob"])
    second = login(ctx, "alice", USERS["alice"])
    assert second.status_code == 200, second.text
    assert second.json()["role"] == "none"
    _, _, groups, grants = row(ctx, "alice")
    assert VMADMINS not in groups and WEBOPS in groups and grants == [["user", "web"]]
    assert login(ctx, "bob", USERS["bob"]).json()["role"] == "admin"
    # out of every mapped group: refused, and the sessions she had are gone
    slapd.set_members("webops", ["bob"])
    assert login(ctx, "alice", USERS["alice"]).status_code == 403
    old = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {first.json()['token']}"})
    assert old.get("/api/v1/whoami").status_code == 401
    assert row(ctx, "alice")[1:] == ("none", [group_dn("staff")], [])


def test_directory_down_is_a_clear_503_and_local_users_still_log_in(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    users.create(ctx, "localadmin", "admin", LOCAL_PASSWORD)
    closed = f"ldap://127.0.0.1:{free_port()}"
    configure(admin, slapd, url=closed, timeout_s=2)
    down = login(ctx, "alice", USERS["alice"])
    assert down.status_code == 503
    assert down.json()["error"]["message"].startswith(f"LDAP server {closed} unreachable")
    local = login(ctx, "localadmin", LOCAL_PASSWORD)
    assert local.status_code == 200 and local.json()["role"] == "admin"
    assert login(ctx, "localadmin", "wrong local pw").status_code == 401  # never the directory
    # the real server stopped: the same, then logins work again once it is back
    configure(admin, slapd, timeout_s=2)
    slapd.stop()
    try:
        stopped = login(ctx, "alice", USERS["alice"])
        assert stopped.status_code == 503 and slapd.url in stopped.json()["error"]["message"]
        assert login(ctx, "localadmin", LOCAL_PASSWORD).status_code == 200
    finally:
        slapd.start()
    assert login(ctx, "alice", USERS["alice"]).status_code == 200


def test_a_local_user_is_never_logged_in_by_the_directory(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    users.create(ctx, "alice", "viewer", LOCAL_PASSWORD)  # a local alice, as the directory's
    configure(admin, slapd)
    assert login(ctx, "alice", USERS["alice"]).status_code == 401
    ok = login(ctx, "alice", LOCAL_PASSWORD)
    assert ok.status_code == 200 and ok.json()["role"] == "viewer"
    assert row(ctx, "alice")[0] == "local"


def test_failed_directory_logins_are_rate_limited(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    configure(admin, slapd)
    tries = [login(ctx, "alice", f"guess-{i}").status_code for i in range(3)]
    assert tries == [401, 401, 401]
    held = login(ctx, "alice", USERS["alice"])  # the right password, but too soon
    assert held.status_code == 429 and held.json()["error"]["details"]["retry_after_s"] >= 1


def test_the_bind_password_is_never_returned(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    made = configure(admin, slapd)
    assert made["bind_password_set"] is True and "bind_password" not in made
    shown = admin.get("/api/v1/auth/ldap")
    assert shown.status_code == 200 and shown.json()["bind_password_set"] is True
    assert slapd.service_password not in shown.text and slapd.service_password not in str(made)
    # a PUT without the password keeps it: logins still bind as the service account
    again = settings(slapd, timeout_s=3)
    del again["bind_password"]
    assert admin.put("/api/v1/auth/ldap", json=again).json()["timeout_s"] == 3
    assert login(ctx, "alice", USERS["alice"]).status_code == 200
    assert slapd.service_password not in admin.get("/openapi.json").text


def test_ldap_settings_are_validated_and_admin_only(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    assert admin.get("/api/v1/auth/ldap").status_code == 404  # LDAP off
    first = settings(slapd)
    del first["bind_password"]
    assert admin.put("/api/v1/auth/ldap", json=first).json()["error"]["field"] == "bind_password"
    for over, field in [({"url": "http://127.0.0.1"}, "url"),
                        ({"url": "ldap://user:pw@host"}, "url"),
                        ({"base_dn": ""}, "base_dn"), ({"bind_dn": "not a dn"}, "bind_dn"),
                        ({"base_dn": "x" * 600}, "base_dn"),
                        ({"user_filter": "(uid=alice)"}, "user_filter"),
                        ({"user_filter": "uid={username}"}, "user_filter"),
                        ({"group_map": [{"group": VMADMINS, "role": "god"}]}, "group_map"),
                        ({"group_map": [{"group": "vmadmins", "role": "admin"}]}, "group_map"),
                        ({"surprise": 1}, "surprise")]:
        resp = admin.put("/api/v1/auth/ldap", json=settings(slapd, **over))
        assert resp.status_code == 422, (over, resp.text)
        assert resp.json()["error"]["field"].startswith(field), (over, resp.json())
    configure(admin, slapd)
    users.create(ctx, "vera", "viewer", LOCAL_PASSWORD)
    vera = TestClient(create_app(ctx), headers={
        "Authorization": f"Bearer {login(ctx, 'vera', LOCAL_PASSWORD).json()['token']}"})
    assert vera.get("/api/v1/auth/ldap").status_code == 403
    assert vera.put("/api/v1/auth/ldap", json=settings(slapd)).status_code == 403
    assert vera.delete("/api/v1/auth/ldap").status_code == 403
    assert admin.delete("/api/v1/auth/ldap").status_code == 204
    assert login(ctx, "alice", USERS["alice"]).status_code == 401  # LDAP off again


def test_the_test_route_binds_and_finds_a_user(
        ctx: EngineContext, admin: TestClient, slapd: Slapd) -> None:
    configure(admin, slapd)
    found = admin.post("/api/v1/auth/ldap/test", json={"username": "alice"}).json()
    assert found["user_dn"] == f"uid=alice,ou=people,{BASE}" and found["role"] == "admin"
    assert VMADMINS in found["groups"] and found["grants"][0]["group"] == VMADMINS
    for name in ("nobody", "al*"):  # a wildcard is escaped: it matches no one, not alice
        missing = admin.post("/api/v1/auth/ldap/test", json={"username": name}).json()
        assert missing["user_dn"] is None and "no single entry" in missing["message"]
    configure(admin, slapd, bind_password="not-the-service-password")
    refused = admin.post("/api/v1/auth/ldap/test", json={})
    assert refused.status_code == 502 and SERVICE_DN in refused.json()["error"]["message"]


@pytest.fixture
def cli_env(ctx: EngineContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI talks to this test's engine (plain HTTP on loopback) as admin."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(paths, "USER_CONFIG", tmp_path / "home" / "client.json")
    with serving(create_app(ctx)) as url:
        monkeypatch.setenv("CORRAL_URL", url)
        monkeypatch.setenv("CORRAL_TOKEN", create_token(ctx, "admin"))
        yield


def corral(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args))


def test_cli_sets_shows_tests_and_unsets(
        ctx: EngineContext, slapd: Slapd, tmp_path: Path, cli_env: None) -> None:
    pw = tmp_path / "bind.pw"
    pw.write_text(slapd.service_password + "\n")
    base = ["auth", "ldap", "set", "--url", slapd.url, "--bind-dn", SERVICE_DN,
            "--base-dn", BASE]
    bad = corral(*base, "--bind-password-file", str(pw), "--group-map", "vmadmins=admin")
    assert bad.exit_code != 0 and "GROUP_DN=ROLE@PROJECT" in bad.output
    made = corral(*base, "--bind-password-file", str(pw),
                  "--group-map", f"{VMADMINS}=admin@*", "--group-map", f"{WEBOPS}=user@web")
    assert made.exit_code == 0, made.output
    shown = corral("auth", "ldap", "show")
    assert shown.exit_code == 0, shown.output
    assert f"{VMADMINS}=admin@*" in shown.output and f"{WEBOPS}=user@web" in shown.output
    assert "bind_password_set" in shown.output and slapd.service_password not in shown.output
    as_json = json.loads(corral("auth", "ldap", "show", "-o", "json").stdout)
    assert as_json["group_map"][1] == {"group": WEBOPS, "role": "user", "project": "web"}
    tested = corral("auth", "ldap", "test", "--user", "alice")
    assert tested.exit_code == 0, tested.output
    assert "a login gets role admin" in tested.output and VMADMINS in tested.output
    assert login(ctx, "alice", USERS["alice"]).json()["role"] == "admin"
    assert corral("auth", "ldap", "unset").exit_code == 0
    gone = corral("auth", "ldap", "show")
    assert gone.exit_code != 0 and "not configured" in gone.output
