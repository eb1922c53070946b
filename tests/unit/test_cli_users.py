"""`corral user`, `token`, `login`, `logout`, `whoami` against a real engine over HTTPS
(uvicorn on loopback). HOME is the test's own: the login's session token goes to the
node's client.json (local) or to the remote's entry in remotes.json, and `logout` revokes
it and goes back to the config's own token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_node import Node, cli, ok, serving_node
from engine_seed import PASSWORD

from corral.client import Client, remotes
from corral.errors import Unauthorized


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    with serving_node(tmp_path, monkeypatch) as node:
        yield node


def whoami(*args: str) -> dict[str, object]:
    return dict(json.loads(ok(*args, "whoami", "-o", "json").stdout))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    f = tmp_path / "pw"
    f.write_text(PASSWORD + "\n")
    return f


def test_user_create_login_token_logout(node: Node, password_file: Path) -> None:
    ok("user", "create", "alice", "--role", "operator", "--password-file", str(password_file))
    users = json.loads(ok("user", "list", "-o", "json").stdout)
    assert [(u["name"], u["role"], u["has_password"]) for u in users] == [
        ("alice", "operator", True)]
    assert "argon2" not in ok("user", "show", "alice").output

    assert whoami()["user"] is None  # the node's own token
    res = ok("login", "--user", "alice", "--password-file", str(password_file))
    assert "logged in as alice" in res.output
    saved = json.loads(node.config.read_text())
    assert saved["token"] == node.token and saved["session_token"] != node.token
    me = whoami()
    assert me["user"] == "alice" and me["kind"] == "session" and me["role"] == "operator"

    made = json.loads(ok("token", "create", "--name", "ci", "--role", "viewer",
                         "--expires", "30d", "-o", "json").stdout)
    assert made["role"] == "viewer" and made["expires_at"] and made["token"].startswith("crl_")
    listed = json.loads(ok("token", "list", "-o", "json").stdout)
    assert {t["name"] for t in listed} >= {"ci"}
    assert "crl_" not in ok("token", "list", "-o", "json").stdout  # never a secret again
    res = cli("token", "create", "--name", "big", "--role", "admin")
    assert res.exit_code == 2 and "forbidden" in res.output
    ok("token", "revoke", "ci")

    session = saved["session_token"]
    ok("logout")
    assert "session_token" not in json.loads(node.config.read_text())
    assert whoami()["user"] is None  # back to the node's own token
    with Client(node.url, session, ca_pem=node.ca_pem) as c, pytest.raises(Unauthorized):
        c.whoami()  # the session was revoked on the engine
    res = cli("logout")
    assert res.exit_code == 2 and "not logged in" in res.output


def test_login_to_a_remote_keeps_the_session_in_its_entry(node: Node, password_file: Path) -> None:
    ok("user", "create", "bob", "--role", "viewer", "--password-file", str(password_file))
    remotes.add_remote("far", node.url, node.token, node.ca_pem)  # and switch to it
    ok("login", "--user", "bob", "--password-file", str(password_file))
    entry = remotes.get("far")
    assert entry.token == node.token and entry.session_token
    assert "session_token" not in json.loads(node.config.read_text())
    assert whoami()["user"] == "bob"
    assert whoami("--remote", "local")["user"] is None
    res = cli("user", "list")
    assert res.exit_code == 2 and "lacks permission user.read" in " ".join(res.output.split())
    ok("logout")
    assert remotes.get("far").session_token is None
    assert whoami()["user"] is None


def test_a_wrong_password_is_one_clear_line(node: Node, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not the password\n")
    res = cli("login", "--user", "nobody", "--password-file", str(bad))
    assert res.exit_code == 2 and "wrong user name or password" in res.output
    assert "session_token" not in json.loads(node.config.read_text())
    res = cli("user", "create", "carol", "--role", "king", "--no-password")
    assert res.exit_code == 2 and "role 'king': one of none, viewer" in " ".join(res.output.split())
    res = cli("token", "create", "--name", "x", "--expires", "soon")
    assert res.exit_code == 2 and "a duration such as 30d" in " ".join(res.output.split())


def test_the_password_is_asked_without_a_file(node: Node) -> None:
    ok("user", "create", "dave", input=f"{PASSWORD}\n{PASSWORD}\n")
    res = ok("login", "--user", "dave", input=f"{PASSWORD}\n")
    assert "logged in as dave (user)" in " ".join(res.output.split())


def test_an_admin_manages_a_service_users_tokens(node: Node) -> None:
    ok("user", "create", "backup", "--role", "viewer", "--no-password")
    made = json.loads(ok("token", "create", "--name", "cron", "--user", "backup",
                         "-o", "json").stdout)
    assert made["role"] == "viewer"
    listed = json.loads(ok("token", "list", "--user", "backup", "-o", "json").stdout)
    assert [t["name"] for t in listed] == ["cron"]
    ok("token", "revoke", "cron", "--user", "backup")
    assert json.loads(ok("token", "list", "--user", "backup", "-o", "json").stdout) == []
