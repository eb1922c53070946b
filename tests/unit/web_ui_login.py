"""A browser of the web UI in unit tests: a new user, logged in through the login form."""

from __future__ import annotations

import re

from engine_seed import PASSWORD
from starlette.testclient import TestClient

from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import RoleAssignment
from corral.engine.services import users

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def log_in(ctx: EngineContext, name: str, role: str = "admin",
           project: str | None = None) -> tuple[TestClient, str]:
    """A browser logged in as a new user (``role`` everywhere, or only in ``project``) and
    its CSRF token."""
    users.create(ctx, name, "none" if project else role, PASSWORD)
    if project:
        with ctx.db.session() as s:
            s.add(RoleAssignment(subject_kind="user", subject=name, role=role, project=project))
    b = TestClient(create_app(ctx), base_url="https://testserver")
    token = CSRF.search(b.get("/login").text)
    assert token
    resp = b.post("/login", data={"csrf": token.group(1), "username": name,
                                  "password": PASSWORD, "next": "/"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    found = CSRF.search(b.get("/").text)
    assert found
    return b, found.group(1)
