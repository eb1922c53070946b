"""The web UI without a browser (engine/ui): login with a corral user, the session cookie
and its server-side expiry, CSRF on every unsafe request, logout, and pages that follow the
caller's projects (a user of project a sees nothing of project b's). The browser tests are
tests/integration/test_web_ui.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from engine_seed import PASSWORD, engine_context
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.orm import Session
from web_ui_login import add_user, browser, csrf_of, logged_in

from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import (
    AuditRecord,
    Host,
    Image,
    Project,
    Token,
    Vm,
    utcnow,
)
from corral.engine.permissions import PERMISSIONS, SELF
from corral.engine.routes.deps import declared_permissions
from corral.engine.services.auth import create_token
from corral.engine.ui import session


def _projects(s: Session, host: Host) -> None:
    """Projects a and b with a stopped VM each (``a.web``, ``b.web``) and one in default."""
    image = s.query(Image).filter_by(name="tiny").one()
    s.add_all([Project(name="a"), Project(name="b")])
    s.flush()
    for name, project in (("a.web", "a"), ("b.web", "b"), ("plain", "default")):
        s.add(Vm(name=name, image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="stopped", desired_power="stopped",
                 project=project))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, prepare=_projects)


def test_a_wrong_password_is_refused_and_sets_no_session(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b = browser(ctx)
    form = b.get("/login")
    assert form.status_code == 200 and 'autocomplete="current-password"' in form.text
    resp = b.post("/login", data={"csrf": csrf_of(form.text), "username": "ann",
                                  "password": "not it"}, follow_redirects=False)
    assert resp.status_code == 401
    assert "Wrong user name or password." in resp.text
    assert session.SESSION_COOKIE not in b.cookies
    assert b.get("/", follow_redirects=False).headers["location"] == "/login?next=/"


def test_a_login_post_without_its_csrf_token_is_refused(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b = browser(ctx)
    b.get("/login")  # the cookie half of the pair, but no form field
    resp = b.post("/login", data={"username": "ann", "password": PASSWORD})
    assert resp.status_code == 403 and "security token" in resp.text
    other = browser(ctx)  # another site's form: a token, but not the cookie's
    resp = other.post("/login", data={"csrf": "guess", "username": "ann", "password": PASSWORD})
    assert resp.status_code == 403
    assert session.SESSION_COOKIE not in b.cookies and session.SESSION_COOKIE not in other.cookies


def test_login_sets_a_strict_cookie_and_the_dashboard_shows_the_host(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b = browser(ctx)
    form = b.get("/login?next=/vms")
    resp = b.post("/login", data={"csrf": csrf_of(form.text), "username": "ann",
                                  "password": PASSWORD, "next": "/vms"}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/vms"
    cookie = next(c for c in resp.headers.get_list("set-cookie")
                  if c.startswith(session.SESSION_COOKIE + "="))
    assert {"HttpOnly", "Secure", "SameSite=strict", "Path=/"} <= {
        part.strip() for part in cookie.split(";")}
    page = b.get("/")
    assert page.status_code == 200
    assert "h1" in page.text and "Hosts" in page.text and ">ann<" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    with ctx.db.session() as s:  # an API session token, expiring when idle (30 min)
        tok = s.query(Token).filter_by(kind="session").one()
        assert tok.expires_at is not None
        assert utcnow() + session.IDLE - timedelta(minutes=1) < tok.expires_at \
            <= utcnow() + session.IDLE


def test_login_redirects_only_within_the_site(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b = browser(ctx)
    form = b.get("/login")
    resp = b.post("/login", data={"csrf": csrf_of(form.text), "username": "ann",
                                  "password": PASSWORD, "next": "//evil.example/x"},
                  follow_redirects=False)
    assert resp.headers["location"] == "/"


def test_without_a_session_pages_send_to_the_login(ctx: EngineContext) -> None:
    b = browser(ctx)
    assert b.get("/vms", follow_redirects=False).headers["location"] == "/login?next=/vms"
    assert b.get("/ui/events", follow_redirects=False).status_code == 303  # no stream
    htmx = b.get("/vms/plain/row", headers={"HX-Request": "true"}, follow_redirects=False)
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login")
    # an API token is not a session, even in the cookie
    b.cookies.set(session.SESSION_COOKIE, create_token(ctx, "api"), domain="testserver")
    assert b.get("/", follow_redirects=False).status_code == 303


def test_every_unsafe_request_needs_the_sessions_csrf_token(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b, csrf = logged_in(ctx, "ann")
    for headers, data in (({}, {"action": "start"}),  # none
                          ({"X-CSRF-Token": "0" * 64}, {"action": "start"}),  # wrong
                          ({}, {"action": "start", "csrf": csrf[:-1] + "x"})):
        resp = b.post("/vms/plain/power", headers=headers, data=data)
        assert resp.status_code == 403 and "Request refused" in resp.text
    assert b.post("/logout").status_code == 403  # logout too: no one logs you out from afar
    ok = b.post("/vms/plain/power", data={"action": "start"},
                headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert ok.status_code == 200 and "vm.start" in ok.text and 'hx-get="/operations/' in ok.text
    bad = b.post("/vms/plain/power", data={"action": "explode", "csrf": csrf})
    assert bad.status_code == 422 and "action" in bad.text


def test_logout_ends_the_session_on_the_server(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b, csrf = logged_in(ctx, "ann")
    stolen = b.cookies[session.SESSION_COOKIE]
    resp = b.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    replay = browser(ctx)  # the old cookie, kept by someone: refused now
    replay.cookies.set(session.SESSION_COOKIE, stolen, domain="testserver")
    assert replay.get("/", follow_redirects=False).status_code == 303
    with ctx.db.session() as s:
        assert s.query(Token).filter_by(kind="session").count() == 0


def test_an_expired_session_sends_to_the_login(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b, _ = logged_in(ctx, "ann")
    assert b.get("/", follow_redirects=False).status_code == 200
    with ctx.db.session() as s:  # whatever the cookie's Max-Age says, the server decides
        s.query(Token).filter_by(kind="session").update(
            {"expires_at": utcnow() - timedelta(seconds=1)})
    assert b.get("/", follow_redirects=False).headers["location"] == "/login?next=/"


def test_a_project_user_sees_only_its_projects_vms(ctx: EngineContext) -> None:
    add_user(ctx, "alice", "user", project="a")
    b, csrf = logged_in(ctx, "alice")
    listing = b.get("/vms")
    assert listing.status_code == 200
    assert 'href="/vms/a.web"' in listing.text
    assert "b.web" not in listing.text and "plain" not in listing.text
    assert "1 shown of 1" in listing.text
    for path in ("/vms/b.web", "/vms/b.web/row", "/vms/b.web/summary", "/vms/plain"):
        assert b.get(path).status_code == 404, path
    theirs = b.post("/vms/b.web/power", data={"action": "start", "csrf": csrf})
    assert theirs.status_code == 404
    mine = b.get("/vms/a.web")
    assert mine.status_code == 200 and "Configuration" in mine.text
    assert 'value="start"' in mine.text  # a user of a may start its VMs
    dashboard = b.get("/")
    assert '<span class="stat-n">1</span><span class="stat-l">virtual machines' in dashboard.text


def test_a_viewer_sees_no_power_buttons_and_is_refused_power(ctx: EngineContext) -> None:
    add_user(ctx, "vic", "viewer", project="a")
    b, csrf = logged_in(ctx, "vic")
    page = b.get("/vms/a.web")
    assert page.status_code == 200 and 'name="action"' not in page.text
    resp = b.post("/vms/a.web/power", data={"action": "start", "csrf": csrf})
    assert resp.status_code == 403 and "vm.power" in resp.text


def test_the_admin_sees_every_project_and_filters(ctx: EngineContext) -> None:
    add_user(ctx, "ann")
    b, _ = logged_in(ctx, "ann")
    every = b.get("/vms").text
    assert all(f'href="/vms/{n}"' in every for n in ("a.web", "b.web", "plain"))
    only_b = b.get("/vms?project=b").text
    assert 'href="/vms/b.web"' in only_b and 'href="/vms/a.web"' not in only_b
    assert "1 shown of 3" in only_b
    assert 'href="/vms/plain"' in b.get("/vms?name=PLA&state=stopped").text
    assert "No virtual machine matches" in b.get("/vms?state=running").text


def test_every_page_route_declares_one_known_permission(ctx: EngineContext) -> None:
    pages = [(sorted(rc.methods or ())[0], str(rc.path), declared_permissions(rc.dependant))
             for rc in iter_route_contexts(create_app(ctx).routes)
             if isinstance(rc.original_route, APIRoute) and not str(rc.path).startswith("/api/")]
    assert len(pages) >= 8
    undeclared = [(m, p) for m, p, perms in pages if len(perms) != 1 and p != "/login"]
    assert undeclared == []
    assert {perm for _, _, perms in pages for perm in perms} <= set(PERMISSIONS) | {SELF}


def test_the_audit_log_records_ui_logins_and_actions(ctx: EngineContext) -> None:
    add_user(ctx, "alice", "user", project="a")
    b = browser(ctx)
    form = b.get("/login")
    b.post("/login", data={"csrf": csrf_of(form.text), "username": "alice", "password": "no"})
    b, csrf = logged_in(ctx, "alice")
    b.post("/vms/a.web/power", data={"action": "start", "csrf": csrf})
    with ctx.db.session() as s:
        rows = [(r.user, r.action, r.target, r.status, r.project)
                for r in s.query(AuditRecord).order_by(AuditRecord.seq)]
    assert ("alice", "login", "/login", 401, "default") in rows
    assert ("alice", "login", "/login", 303, "default") in rows
    assert ("alice", "vm.power", "/vms/a.web/power", 303, "a") in rows
