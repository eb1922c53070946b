"""Cluster settings (`corral cluster show|set|unset`, /api/v1/cluster/settings): typed
values, clear refusals, defaults back on unset, admins only to change them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from engine_seed import client_as
from starlette.testclient import TestClient
from typer.testing import CliRunner

from corral.cli import cluster as cluster_cli
from corral.cli.main import app as cli_app
from corral.client import Client
from corral.engine.context import EngineContext
from corral.engine.services import cluster_settings

URL = "/api/v1/cluster/settings"


def test_defaults_apply_until_set_and_come_back_on_unset(
        ctx: EngineContext, admin: TestClient) -> None:
    listed = {s["key"]: s for s in admin.get(URL).json()}
    assert listed["migration.tls"]["value"] is True and not listed["migration.tls"]["set"]
    assert cluster_settings.get(ctx, "migration.converge_s") == 600
    resp = admin.put(f"{URL}/migration.converge_s", json={"value": "2m"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["value"] == 120 and resp.json()["set"]
    assert cluster_settings.get(ctx, "migration.converge_s") == 120
    assert admin.delete(f"{URL}/migration.converge_s").json()["value"] == 600
    assert cluster_settings.get(ctx, "migration.converge_s") == 600


@pytest.mark.parametrize(("key", "given", "stored"), [
    ("migration.tls", "off", False), ("migration.tls", True, True),
    ("migration.network", "10.20.0.7/24", "10.20.0.0/24"),
    ("migration.network", "fd00::/64", "fd00::/64"),
    ("migration.parallel", 4, 4), ("migration.converge_s", "1h", 3600),
    ("migration.converge_s", 90, 90),
])
def test_values_are_parsed_as_their_kind(ctx: EngineContext, admin: TestClient, key: str,
                                         given: object, stored: object) -> None:
    resp = admin.put(f"{URL}/{key}", json={"value": given})
    assert resp.status_code == 200, resp.text
    assert cluster_settings.get(ctx, key) == stored


@pytest.mark.parametrize(("key", "given"), [
    ("migration.tls", "maybe"), ("migration.network", "10.20.0.300/24"),
    ("migration.parallel", 0), ("migration.parallel", "two"), ("migration.parallel", True),
    ("migration.converge_s", "5"), ("migration.converge_s", "3 days"),
])
def test_a_bad_value_is_a_422_naming_the_setting_and_changes_nothing(
        ctx: EngineContext, admin: TestClient, key: str, given: object) -> None:
    before = cluster_settings.get(ctx, key)
    resp = admin.put(f"{URL}/{key}", json={"value": given})
    assert resp.status_code == 422, resp.text
    assert key in resp.json()["error"]["message"]
    assert cluster_settings.get(ctx, key) == before


def test_an_unknown_setting_is_a_404_listing_the_known_ones(admin: TestClient) -> None:
    resp = admin.put(f"{URL}/migration.speed", json={"value": "fast"})
    assert resp.status_code == 404
    assert "migration.tls" in resp.json()["error"]["message"]


def test_operators_read_the_settings_but_only_admins_change_them(ctx: EngineContext) -> None:
    operator = client_as(ctx, "operator")
    assert operator.get(URL).status_code == 200
    assert operator.put(f"{URL}/migration.tls", json={"value": "off"}).status_code == 403
    assert cluster_settings.get(ctx, "migration.tls") is True


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "200"})


def test_the_cli_sets_shows_and_unsets(admin: TestClient, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    def sdk(_data_dir: Path | None = None) -> Client:
        c = Client("http://testserver", "unused")
        c._http = TestClient(admin.app, headers=dict(admin.headers))
        return c

    monkeypatch.setattr(cluster_cli, "client", sdk)
    done = _cli("cluster", "set", "migration.network", "10.20.0.0/24")
    assert done.exit_code == 0, done.output
    assert "migration.network = 10.20.0.0/24" in done.output
    table = _cli("cluster", "show")
    assert "migration.network" in table.output and "10.20.0.0/24" in table.output
    one = _cli("cluster", "show", "migration.tls")
    assert "migration.tls = on (the default)" in one.output and "TLS" in one.output
    bad = _cli("cluster", "set", "migration.tls", "sometimes")
    assert bad.exit_code != 0 and "on or off" in bad.output
    gone = _cli("cluster", "unset", "migration.network", "-o", "json")
    assert json.loads(gone.output)["value"] is None
