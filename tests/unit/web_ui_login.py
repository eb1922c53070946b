"""A browser of the web UI in unit tests: users made, and logged in through the login form
as a person does (its CSRF token first)."""

from __future__ import annotations

import re

from engine_seed import PASSWORD
from starlette.testclient import TestClient

from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import RoleAssignment
from corral.engine.services import users

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def add_user(ctx: EngineContext, name: str, role: str = "admin",
             project: str | None = None) -> None:
    """A password user: ``role`` everywhere, or (``project``) only in that project."""
    users.create(ctx, name, "none" if project else role, PASSWORD)
    if project:
        with ctx.db.session() as s:
            s.add(RoleAssignment(subject_kind="user", subject=name, role=role, project=project))


def browser(ctx: EngineContext) -> TestClient:
    # https: the session cookie is Secure, so a client sends it back over HTTPS only
    return TestClient(create_app(ctx), base_url="https://testserver")


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


def sign_in(ctx: EngineContext, name: str, password: str = PASSWORD) -> TestClient:
    """A browser that logged in as the existing user ``name`` (nothing asked after)."""
    b = browser(ctx)
    resp = b.post("/login", data={"csrf": csrf_of(b.get("/login").text), "username": name,
                                  "password": password, "next": "/"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    return b


def logged_in(ctx: EngineContext, name: str,
              password: str = PASSWORD) -> tuple[TestClient, str]:
    """A browser logged in as the existing user ``name``, and its session's CSRF token."""
    b = sign_in(ctx, name, password)
    return b, csrf_of(b.get("/").text)


def log_in(ctx: EngineContext, name: str, role: str = "admin",
           project: str | None = None) -> tuple[TestClient, str]:
    """A browser logged in as a new user (``role`` everywhere, or only in ``project``) and
    its CSRF token."""
    add_user(ctx, name, role, project)
    return logged_in(ctx, name)
