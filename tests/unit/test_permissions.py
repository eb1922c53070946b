"""Every route of the API declares the permission it needs, in one place (a ``need(...)``
dependency on the route), and the built-in roles hold: a viewer reads everything but users
and consoles and changes nothing; a user runs VMs but makes no networks; an operator does
all but users and hosts. Walks the routes of the real app, so a route added without a
permission fails here."""

from __future__ import annotations

import re

import pytest
from engine_seed import client_as
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import Project, RoleAssignment
from corral.engine.permissions import PERMISSIONS, PROJECT_SCOPED, ROLES, SELF
from corral.engine.routes.deps import declared_permissions
from corral.engine.services import users
from corral.engine.services.auth import create_token

# Reached without a bearer token: by design, each for a reason of its own.
EXEMPT = {
    ("GET", "/api/v1/health"),  # liveness
    ("POST", "/api/v1/login"),  # how a user gets a token
    ("GET", "/api/v1/ca.pem"),  # checked against a fingerprint before it is trusted
    ("POST", "/api/v1/hosts/join"),  # a one-time join token
    ("POST", "/api/v1/agent/report"),  # agents: mutual TLS, the host's certificate
    ("GET", "/api/v1/agent/corosync"),
}
# The console WebSockets take a bearer token or a ticket; it checks vm.console itself
# (test_a_viewer_cannot_open_a_console).
WEBSOCKETS = {"/api/v1/vms/{name}/console", "/api/v1/vms/{name}/vnc-websocket"}
ENDLESS = {"/api/v1/events"}  # an event stream: never ends while the client reads
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _routes(ctx: EngineContext) -> list[tuple[str, str, list[str]]]:
    """(method, path, permissions declared) of every API route of the app."""
    rows = []
    for rc in iter_route_contexts(create_app(ctx).routes):
        route = rc.original_route
        if not str(rc.path).startswith("/api/"):
            continue  # the web UI's pages (sessions, CSRF): tests/unit/test_web_ui_session.py
        if isinstance(route, APIWebSocketRoute):
            rows.append(("WS", str(rc.path), declared_permissions(rc.dependant)))
        elif isinstance(route, APIRoute):
            for method in sorted(rc.methods or ()):
                rows.append((method, str(rc.path), declared_permissions(rc.dependant)))
    return rows


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_declares_one_known_permission(ctx: EngineContext) -> None:
    rows = _routes(ctx)
    assert len(rows) > 80  # the walk found the app's routes
    undeclared = [(m, p) for m, p, perms in rows
                  if not perms and (m, p) not in EXEMPT and p not in WEBSOCKETS]
    assert undeclared == []
    several = [(m, p, perms) for m, p, perms in rows if len(perms) > 1]
    assert several == []  # one place, one permission
    unknown = {perm for _, _, perms in rows for perm in perms} - set(PERMISSIONS) - {SELF}
    assert unknown == set()
    # the exempt routes are still there (a renamed one would be exempt for nothing)
    assert {(m, p) for m, p, _ in rows} >= EXEMPT


def test_the_builtin_roles_nest_and_only_admins_manage_users_and_hosts() -> None:
    assert ROLES["none"] < ROLES["viewer"] < ROLES["user"] < ROLES["operator"] < ROLES["admin"]
    assert ROLES["admin"] == set(PERMISSIONS)
    assert all(p.endswith(".read") for p in ROLES["viewer"])
    assert not any(p.startswith("user.") for p in ROLES["operator"])
    assert {p for p in ROLES["operator"] if p.startswith("host.")} == {"host.read"}
    assert {"vm.create", "vm.console", "vm.delete", "volume.create", "snapshot.create",
            "network.attach"} <= ROLES["user"]
    assert not {"network.create", "image.create", "pool.create", "host.update"} & ROLES["user"]
    # reading cloud-init secrets back: operators and admins only (a user writes them)
    assert "vm.secrets" in ROLES["operator"] and "vm.secrets" not in ROLES["user"]


def test_a_viewer_gets_403_on_every_mutating_route(ctx: EngineContext) -> None:
    viewer = client_as(ctx, "viewer")
    refused, let_through = [], []
    for method, path, perms in _routes(ctx):
        if method not in MUTATING or not perms or perms == [SELF]:
            continue  # exempt, or the caller's own credentials (logout, own tokens)
        assert not perms[0].endswith(".read"), (method, path)  # a change needs more
        resp = viewer.request(method, _url(path), json={})
        (refused if resp.status_code == 403 else let_through).append((method, path))
        if resp.status_code == 403:
            assert resp.json()["error"]["code"] == "forbidden"
    assert let_through == []
    assert len(refused) > 50


def test_a_viewer_reads_everything_but_users_and_consoles(ctx: EngineContext) -> None:
    viewer = client_as(ctx, "viewer")
    answers = {}
    for method, path, perms in _routes(ctx):
        if method != "GET" or not perms or path in ENDLESS:
            continue
        answers[path] = (perms[0], viewer.get(_url(path)).status_code)
    for path, (perm, status) in answers.items():
        if perm in ROLES["viewer"] or perm == SELF:
            assert status not in (401, 403), path
            if "{" not in path:
                assert status == 200, path  # a collection: there, and readable
        else:
            assert status == 403, path
    assert {p for p, (perm, _) in answers.items()
            if perm not in ROLES["viewer"] and perm != SELF} == {
        "/api/v1/users", "/api/v1/users/{name}", "/api/v1/users/{name}/tokens",
        "/api/v1/vms/{name}/console-log", "/api/v1/vms/{name}/vnc",
        "/api/v1/vms/{name}/cloud-init",  # user-data and password hashes: vm.secrets
        "/api/v1/audit", "/api/v1/audit/verify",  # who did what: admins (audit.read)
        "/api/v1/auth/ldap",  # the directory's settings: user.read
        # which roles exist and who holds them: admins (role.read)
        "/api/v1/roles", "/api/v1/permissions", "/api/v1/role-assignments"}


def test_a_user_runs_vms_but_makes_no_networks_images_or_hosts(ctx: EngineContext) -> None:
    user = client_as(ctx, "user")
    assert user.post("/api/v1/networks", json={}).status_code == 403
    assert user.post("/api/v1/images", json={}).status_code == 403
    assert user.post("/api/v1/hosts/tokens", json={}).status_code == 403
    assert user.post("/api/v1/users", json={}).status_code == 403
    assert user.post("/api/v1/vms", json={}).status_code == 422  # allowed: the body is wrong
    assert user.get("/api/v1/networks").status_code == 200


def test_an_operator_does_all_but_users_and_hosts(ctx: EngineContext) -> None:
    op = client_as(ctx, "operator")
    assert op.get("/api/v1/users").status_code == 403
    assert op.post("/api/v1/hosts/tokens", json={}).status_code == 403
    assert op.patch("/api/v1/hosts/h1", json={}).status_code == 403
    assert op.get("/api/v1/hosts").status_code == 200
    assert op.post("/api/v1/networks", json={}).status_code == 422  # allowed: the body


def test_no_token_is_401_and_a_bad_one_too(ctx: EngineContext) -> None:
    anon = TestClient(create_app(ctx))
    assert anon.get("/api/v1/vms").status_code == 401
    assert anon.get("/api/v1/vms", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert anon.get("/api/v1/health").status_code == 200


def test_a_viewer_cannot_open_a_console(ctx: EngineContext) -> None:
    viewer = client_as(ctx, "viewer")
    with pytest.raises(WebSocketDisconnect) as denied, \
            viewer.websocket_connect("/api/v1/vms/x/console") as ws:
        ws.receive_bytes()
    assert denied.value.code == 4403
    assert viewer.post("/api/v1/vms/x/console-ticket").status_code == 403


def test_every_route_of_a_project_the_caller_cannot_see_is_404(ctx: EngineContext) -> None:
    """A viewer of project ``mine`` asks every project-scoped route in project ``theirs``:
    404 (as for a project that does not exist: names do not leak), never 403 or 200."""
    with ctx.db.session() as s:
        s.add_all([Project(name="mine"), Project(name="theirs")])
    users.create(ctx, "vera", "none", None)
    with ctx.db.session() as s:
        s.add(RoleAssignment(subject_kind="user", subject="vera", role="viewer",
                             project="mine"))
    token = create_token(ctx, "t", "viewer", user="vera")
    vera = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"})
    checked = []
    for method, path, perms in _routes(ctx):
        if not perms or perms[0] not in PROJECT_SCOPED or path in ENDLESS or method == "WS":
            continue
        resp = vera.request(method, _url(path) + "?project=theirs", json={})
        assert resp.status_code == 404, (method, path, resp.status_code)
        assert resp.json()["error"]["field"] == "project"
        checked.append((method, path))
    assert len(checked) > 50
    assert vera.get("/api/v1/vms?project=mine").status_code == 200
