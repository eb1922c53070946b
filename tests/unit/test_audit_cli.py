"""`corral audit list` and `corral audit verify` (the SDK under them, in-process against the
engine's app), and `corral up --audit-retention` reaching the engine's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from engine_seed import admin_client
from starlette.testclient import TestClient
from typer.testing import CliRunner

from corral.cli import audit as audit_cli
from corral.cli.main import app as cli_app
from corral.client import Client
from corral.engine.context import EngineContext, EngineSettings
from corral.node import up as node_up


@pytest.fixture
def admin(ctx: EngineContext, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """The engine's admin client, which the CLI's commands use too."""
    api = admin_client(ctx)

    def sdk(_data_dir: Path | None = None) -> Client:
        c = Client("http://testserver", "unused")
        c._http = TestClient(api.app, headers=dict(api.headers))
        return c

    monkeypatch.setattr(audit_cli, "client", sdk)
    return api


def cli(*args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "200"})


def test_audit_list_shows_and_filters_records(admin: TestClient) -> None:
    admin.post("/api/v1/users", json={"name": "alice", "role": "viewer"})
    admin.delete("/api/v1/users/alice")
    admin.delete("/api/v1/users/nobody")
    table = cli("audit", "list")
    assert table.exit_code == 0, table.output
    assert "user.create" in table.output and "404 not_found" in table.output
    listed = cli("audit", "list", "--action", "user.delete", "--since", "1h", "-o", "json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["action"], r["target"], r["status"]) for r in rows] == [
        ("user.delete", "/api/v1/users/nobody", 404), ("user.delete", "/api/v1/users/alice", 204)]
    assert json.loads(cli("audit", "list", "--user", "nobody", "-o", "json").output) == []
    one = json.loads(cli("audit", "list", "--limit", "1", "-o", "json").output)
    assert [r["seq"] for r in one] == [3]


def test_audit_list_refuses_a_bad_since(admin: TestClient) -> None:
    result = cli("audit", "list", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "since" in result.output


def test_audit_verify_says_ok_then_names_the_edited_seq(
        ctx: EngineContext, admin: TestClient) -> None:
    for name in ("a1", "a2", "a3"):
        admin.post("/api/v1/users", json={"name": name, "role": "viewer"})
    ok = cli("audit", "verify")
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "3 records" in ok.output
    with ctx.db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET target = '/api/v1/users/zz' WHERE seq = 2"))
    broken = cli("audit", "verify")
    assert broken.exit_code == 1
    assert "seq 2" in broken.output
    as_json = cli("audit", "verify", "-o", "json")
    assert as_json.exit_code == 1 and json.loads(as_json.output)["broken_seq"] == 2


def test_up_passes_the_audit_retention_on(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[node_up.UpOptions] = []
    monkeypatch.setattr(node_up, "run_up", seen.append)
    assert cli("up", "--data-dir", str(tmp_path)).exit_code == 0
    assert seen[-1].audit_retention_days == EngineSettings(tmp_path).audit_retention_days == 365
    assert cli("up", "--data-dir", str(tmp_path), "--audit-retention", "0").exit_code == 0
    assert seen[-1].audit_retention_days == 0  # keep forever
    detached = node_up.UpOptions(data_dir=tmp_path, audit_retention_days=90)
    assert cli("up", "--data-dir", str(tmp_path), *detached.setting_args()).exit_code == 0
    assert seen[-1].audit_retention_days == 90
    refused = cli("up", "--data-dir", str(tmp_path), "--audit-retention", "-1")
    assert refused.exit_code == 2 and "--audit-retention" in refused.output
    assert len(seen) == 3
