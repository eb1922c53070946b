"""The audit log through the API: every mutating request (refused ones too), login and logout
is recorded with who, which token, from where, in which project, the action and the outcome;
agents' heartbeats and GETs are not; no body or secret is kept; the hash chain verifies and
an edited row breaks it at its seq; concurrent appends keep one chain; filters, paging and
retention hold; only admins read the log."""

from __future__ import annotations

import threading
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import sqlalchemy as sa
from engine_seed import PASSWORD, client_as
from starlette.testclient import TestClient

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import AuditRecord, utcnow
from corral.engine.services import audit, users
from corral.engine.services.auth import create_token


def records(ctx: EngineContext) -> list[AuditRecord]:
    with ctx.db.session() as s:
        return list(s.scalars(sa.select(AuditRecord).order_by(AuditRecord.seq)).all())


def test_a_mutating_request_is_recorded_with_who_what_and_how_it_ended(
        ctx: EngineContext) -> None:
    alice = client_as(ctx, "admin", "alice", token="ci")
    made = alice.post("/api/v1/users", params={"project": "default"},
                      json={"name": "bob", "role": "viewer", "password": PASSWORD})
    assert made.status_code == 201, made.text
    [rec] = records(ctx)
    assert (rec.user, rec.token_name, rec.action, rec.target, rec.status, rec.error) == (
        "alice", "ci", "user.create", "/api/v1/users", 201, None)
    assert rec.client == "testclient" and rec.project == "default"
    assert rec.seq == 1 and rec.prev_hash == audit.GENESIS and len(rec.hash) == 64
    # an error answer keeps its code
    assert alice.delete("/api/v1/users/nobody").status_code == 404
    last = records(ctx)[-1]
    assert (last.action, last.target, last.status, last.error) == (
        "user.delete", "/api/v1/users/nobody", 404, "not_found")


def test_reads_and_agent_reports_are_not_recorded(ctx: EngineContext, admin: TestClient) -> None:
    assert admin.get("/api/v1/vms").status_code == 200
    assert admin.get("/api/v1/users").status_code == 200
    # the agents' heartbeat (every second, from every host): refused here (no client
    # certificate), and not recorded either way
    assert admin.post("/api/v1/agent/report", json={}).status_code in (401, 422)
    assert records(ctx) == []


def test_refusals_are_recorded_a_viewers_403_and_a_bad_tokens_401(ctx: EngineContext) -> None:
    viewer = client_as(ctx, "viewer", "vera", token="ro")
    assert viewer.delete("/api/v1/networks/default").status_code == 403
    anon = TestClient(create_app(ctx), headers={"Authorization": "Bearer nope"})
    assert anon.post("/api/v1/networks", json={}).status_code == 401
    refused, unknown = records(ctx)
    assert (refused.user, refused.token_name, refused.action, refused.status, refused.error) == (
        "vera", "ro", "network.delete", 403, "forbidden")
    assert (unknown.user, unknown.token_name, unknown.action, unknown.status, unknown.error) == (
        None, None, "network.create", 401, "unauthorized")


def test_logins_failed_and_succeeded_and_logouts_are_recorded(
        ctx: EngineContext, admin: TestClient) -> None:
    users.create(ctx, "alice", "user", PASSWORD)
    anon = TestClient(create_app(ctx))
    assert anon.post("/api/v1/login", json={"username": "alice",
                                            "password": "not it at all"}).status_code == 401
    assert anon.post("/api/v1/login", json={"username": "mallory",
                                            "password": "guessing"}).status_code == 401
    ok = anon.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})
    assert ok.status_code == 200
    session = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {ok.json()['token']}"})
    assert session.post("/api/v1/logout").status_code == 204
    rows = [(r.user, r.action, r.status, r.error) for r in records(ctx)]
    assert rows == [("alice", "login", 401, "unauthorized"),
                    ("mallory", "login", 401, "unauthorized"),
                    ("alice", "login", 200, None),
                    ("alice", "logout", 204, None)]
    assert records(ctx)[-1].token_name.startswith("session-")


def test_no_body_or_secret_is_kept(ctx: EngineContext) -> None:
    alice = client_as(ctx, "admin", "alice")
    new_password = "another secret passphrase"
    alice.post("/api/v1/users", json={"name": "bob", "role": "user", "password": new_password})
    token = alice.post("/api/v1/tokens", json={"name": "deploy"}).json()["token"]
    TestClient(create_app(ctx)).post("/api/v1/login", json={"username": "bob",
                                                            "password": new_password})
    TestClient(create_app(ctx)).post("/api/v1/login", json={"username": "bob",
                                                            "password": "wrong-" + PASSWORD})
    dump = repr([audit.entry_of(r).model_dump() for r in records(ctx)])
    assert len(records(ctx)) == 4
    for secret in (new_password, token, PASSWORD, "wrong-"):
        assert secret not in dump


def test_verify_passes_then_an_edited_row_is_named(ctx: EngineContext, admin: TestClient) -> None:
    for name in ("a1", "a2", "a3", "a4"):
        admin.post("/api/v1/users", json={"name": name, "role": "viewer"})
    answer = admin.get("/api/v1/audit/verify").json()
    assert answer["ok"] is True and answer["count"] == 4 and answer["broken_seq"] is None
    with ctx.db.engine.begin() as conn:  # what a tamperer with the database file would do
        conn.execute(sa.text("UPDATE audit_log SET status = 200 WHERE seq = 3"))
    answer = admin.get("/api/v1/audit/verify").json()
    assert answer["ok"] is False and answer["broken_seq"] == 3, answer
    assert "seq 3" in answer["message"]


def test_verify_names_a_removed_row_and_a_rehashed_edit(ctx: EngineContext) -> None:
    entry = audit.Entry(user="u", token_name="t", client="10.0.0.1", project="default",
                        action="vm.delete", target="/api/v1/vms/web", status=202)
    for _ in range(5):
        audit.append(ctx, entry)
    with ctx.db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq = 2"))
    assert audit.verify(ctx).broken_seq == 3
    with ctx.db.engine.begin() as conn:  # the edited row's own hash recomputed: the next breaks
        conn.execute(sa.text("DELETE FROM audit_log"))
    for _ in range(5):
        audit.append(ctx, entry)
    with ctx.db.session() as s:
        row = s.get(AuditRecord, 3)
        assert row is not None
        row.user = "someone-else"
        row.hash = audit.record_hash(
            {c: getattr(row, c) for c in ("seq", "time", "user", "token_name", "client",
                                          "project", "action", "target", "status", "error")},
            row.prev_hash)
    assert audit.verify(ctx).broken_seq == 4


def test_concurrent_appends_keep_one_unbroken_chain(ctx: EngineContext) -> None:
    threads, per_thread = 8, 20
    errors: list[BaseException] = []

    def appender(i: int) -> None:
        try:
            for _ in range(per_thread):
                audit.append(ctx, audit.Entry(user=f"u{i}", token_name=None, client=None,
                                              project="default", action="vm.create",
                                              target="/api/v1/vms", status=202))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=appender, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert errors == [] and not any(w.is_alive() for w in workers)
    rows = records(ctx)
    assert [r.seq for r in rows] == list(range(1, threads * per_thread + 1))
    assert all(b.prev_hash == a.hash for a, b in pairwise(rows))
    result = audit.verify(ctx)
    assert result.ok and result.count == threads * per_thread


def test_filters_and_paging(ctx: EngineContext, admin: TestClient) -> None:
    alice = client_as(ctx, "admin", "alice")
    bob = client_as(ctx, "viewer", "bob")
    alice.post("/api/v1/users", params={"project": "web"}, json={"name": "c1"})
    alice.delete("/api/v1/users/c1")
    bob.delete("/api/v1/users/alice")
    alice.post("/api/v1/users", json={"name": "c2"})

    def listed(**params: object) -> list[tuple[str | None, str]]:
        resp = admin.get("/api/v1/audit", params=params)
        assert resp.status_code == 200, resp.text
        return [(e["user"], e["action"]) for e in resp.json()]

    assert listed() == [("alice", "user.create"), ("bob", "user.delete"),
                        ("alice", "user.delete"), ("alice", "user.create")]  # newest first
    assert listed(user="bob") == [("bob", "user.delete")]
    assert listed(action="user.delete") == [("bob", "user.delete"), ("alice", "user.delete")]
    assert len(listed(action="user.*")) == 4 and listed(action="vm.*") == []
    assert listed(project="web") == [("alice", "user.create")]
    assert len(listed(since=(utcnow() - timedelta(hours=1)).isoformat())) == 4
    assert listed(since=(utcnow() + timedelta(hours=1)).isoformat()) == []
    page1 = admin.get("/api/v1/audit", params={"limit": 3}).json()
    page2 = admin.get("/api/v1/audit", params={"limit": 3, "before": page1[-1]["seq"]}).json()
    assert [e["seq"] for e in page1 + page2] == [4, 3, 2, 1]
    assert admin.get("/api/v1/audit", params={"limit": 0}).status_code == 422
    assert admin.get("/api/v1/audit", params={"since": "yesterday"}).status_code == 422


def test_only_admins_read_the_audit_log(ctx: EngineContext, admin: TestClient) -> None:
    for role in ("viewer", "user", "operator"):
        someone = client_as(ctx, role)
        assert someone.get("/api/v1/audit").status_code == 403, role
        assert someone.get("/api/v1/audit/verify").status_code == 403, role
    assert admin.get("/api/v1/audit").status_code == 200


def test_retention_prunes_old_records_and_verify_starts_from_the_oldest_kept(
        tmp_path: Path) -> None:
    ctx = build_context(EngineSettings(data_dir=tmp_path, audit_retention_days=30))
    try:
        entry = audit.Entry(user="u", token_name=None, client=None, project="default",
                            action="vm.create", target="/api/v1/vms", status=202)
        for _ in range(6):
            audit.append(ctx, entry)
        with ctx.db.session() as s:  # the first four are old (their hashes stay as they were)
            s.execute(sa.update(AuditRecord).where(AuditRecord.seq <= 4)
                      .values(time=utcnow() - timedelta(days=40)))
        assert audit.prune(ctx) == 4
        assert [r.seq for r in records(ctx)] == [5, 6]
        result = audit.verify(ctx)
        assert result.ok and result.count == 2 and result.first_seq == 5
        assert audit.append(ctx, entry) == 7 and audit.verify(ctx).ok
    finally:
        ctx.ops.shutdown()


def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    ctx = build_context(EngineSettings(data_dir=tmp_path, audit_retention_days=0))
    try:
        audit.append(ctx, audit.Entry(user=None, token_name=None, client=None,
                                      project="default", action="login",
                                      target="/api/v1/login", status=401))
        with ctx.db.session() as s:
            s.execute(sa.update(AuditRecord).values(time=utcnow() - timedelta(days=4000)))
        assert audit.prune(ctx) == 0 and len(records(ctx)) == 1
    finally:
        ctx.ops.shutdown()


def test_a_bug_is_recorded_as_a_500(ctx: EngineContext, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(users, "create", broken)
    token = create_token(ctx, "admin")
    app = TestClient(create_app(ctx), raise_server_exceptions=False,
                     headers={"Authorization": f"Bearer {token}"})
    assert app.post("/api/v1/users", json={"name": "bob"}).status_code == 500
    [rec] = records(ctx)
    assert (rec.action, rec.status, rec.error) == ("user.create", 500, "internal")


def test_an_unknown_path_is_recorded_as_unknown(ctx: EngineContext, admin: TestClient) -> None:
    assert admin.post("/api/v1/no-such-thing", json={}).status_code == 404
    [rec] = records(ctx)
    assert (rec.action, rec.target, rec.status, rec.error) == (
        "unknown", "/api/v1/no-such-thing", 404, "not_found")
