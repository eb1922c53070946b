"""GET /api/v1/vms/{name}/stats and /hosts/{name}/stats through a stand-in agent: the
agent's series passed on with units, ``since`` handed to the agent, 404 for an unknown VM or
host, a project-b VM invisible to a project-a user, empty series for a VM on no host, 502
when the host does not answer, a bad ``since`` refused naming the field; and the SDK and
`corral vm stats` reading it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from engine_seed import PASSWORD, admin_client, engine_context, user_token
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from corral.cli.stats import sparkline
from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Project, RoleAssignment, User, Vm
from corral.engine.services import users
from corral.engine.services.auth import create_token

POINTS = [[1000.0, 10.0], [1005.0, 30.0]]
ASKED: list[str] = []


def agent(req: httpx.Request) -> httpx.Response:
    ASKED.append(str(req.url))
    if req.url.path.startswith("/v1/stats/"):
        return httpx.Response(200, json={"interval_s": 5, "keep_s": 600, "series": {
            "cpu_percent": POINTS, "memory_bytes": [[1005.0, 1048576.0]]}})
    raise httpx.ConnectError("only stats here", request=req)  # the rest: a host away


def vms(s: Session, host: Host) -> None:
    image = s.query(Image).filter_by(name="tiny").one().id
    s.add_all([Project(name="a"), Project(name="b")])
    s.flush()
    for name, host_id, project in (("web", host.id, "default"), ("b.secret", host.id, "b"),
                                   ("a.mine", host.id, "a"), ("nowhere", None, "default")):
        s.add(Vm(name=name, image_id=image, host_id=host_id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="running" if host_id else "stopped",
                 desired_power="running", project=project))
    s.add(User(name="alice", role="none"))
    s.add(RoleAssignment(subject_kind="user", subject="alice", role="user", project="a"))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    ASKED.clear()
    yield from engine_context(tmp_path, agent, vms)


def test_a_vms_stats_come_from_its_hosts_agent(ctx: EngineContext) -> None:
    got = admin_client(ctx).get("/api/v1/vms/web/stats?since=999.5")
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["kind"], body["name"], body["host"], body["source"]) == ("vm", "web", "h1",
                                                                          "agent")
    assert body["series"]["cpu_percent"] == {"unit": "%", "points": POINTS}
    assert body["series"]["net_rx_bps"] == {"unit": "bytes/s", "points": []}
    assert ASKED[-1].endswith("/v1/stats/domains/web?since=999.5")


def test_a_hosts_stats(ctx: EngineContext) -> None:
    got = admin_client(ctx).get("/api/v1/hosts/h1/stats")
    assert got.status_code == 200, got.text
    assert got.json()["series"]["memory_bytes"]["points"] == [[1005.0, 1048576.0]]
    assert admin_client(ctx).get("/api/v1/hosts/h9/stats").status_code == 404


def test_unknown_vm_404_and_no_host_empty(ctx: EngineContext) -> None:
    admin = admin_client(ctx)
    missing = admin.get("/api/v1/vms/ghost/stats")
    assert missing.status_code == 404
    assert "ghost" in missing.json()["error"]["message"]
    idle = admin.get("/api/v1/vms/nowhere/stats").json()
    assert idle["host"] is None and idle["series"]["cpu_percent"]["points"] == []


def test_a_bad_since_is_a_422_naming_it(ctx: EngineContext) -> None:
    got = admin_client(ctx).get("/api/v1/vms/web/stats?since=yesterday")
    assert got.status_code == 422
    assert "since" in got.text


def test_another_projects_vm_is_invisible(ctx: EngineContext) -> None:
    nobody = TestClient(create_app(ctx), headers={
        "Authorization": f"Bearer {user_token(ctx, 'none', 'alice2', 'a1')}"})
    assert nobody.get("/api/v1/vms/secret/stats?project=b").status_code == 404
    secret = create_token(ctx, "a", "admin", user="alice")
    as_a = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {secret}"})
    assert as_a.get("/api/v1/vms/secret/stats?project=b").status_code == 404
    assert as_a.get("/api/v1/vms/secret/stats?project=a").status_code == 404
    assert admin_client(ctx).get("/api/v1/vms/secret/stats?project=b").status_code == 200
    assert not any("secret" in url for url in ASKED[:-1])
    assert as_a.get("/api/v1/vms/mine/stats?project=a").status_code == 200


def _ui_login(ctx: EngineContext, name: str) -> TestClient:
    """A browser (https: the session cookie is Secure) logged in as password user ``name``."""
    b = TestClient(create_app(ctx), base_url="https://testserver")
    csrf = re.search(r'name="csrf" value="([^"]+)"', b.get("/login").text)
    assert csrf
    resp = b.post("/login", data={"csrf": csrf.group(1), "username": name,
                                  "password": PASSWORD, "next": "/"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    return b


def test_the_ui_graphs_data_follows_the_sessions_rights(ctx: EngineContext) -> None:
    users.set_password(ctx, "alice", PASSWORD)
    b = _ui_login(ctx, "alice")
    mine = b.get("/ui/vms/a.mine/stats")
    assert mine.status_code == 200 and mine.json()["series"]["cpu_percent"]["points"] == POINTS
    assert b.get("/ui/vms/b.secret/stats").status_code == 404
    as_api = TestClient(create_app(ctx), headers={
        "Authorization": f"Bearer {create_token(ctx, 'a', 'admin', user='alice')}"})
    for path in ("/hosts/h1/stats", "/hosts/h9/stats"):  # host.read: the API's answer
        assert b.get("/ui" + path).status_code == as_api.get("/api/v1" + path).status_code
    page = b.get("/vms/a.mine")
    assert 'data-graphs="/ui/vms/a.mine/stats"' in page.text
    assert "/static/vendor/uplot/uPlot.iife.min.js" in page.text
    anon = TestClient(create_app(ctx), base_url="https://testserver")
    assert anon.get("/ui/vms/a.mine/stats", follow_redirects=False).status_code == 303


def test_an_unreachable_host_is_a_502(tmp_path: Path) -> None:
    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    for ctx in engine_context(tmp_path, down, vms):
        got = admin_client(ctx).get("/api/v1/vms/web/stats")
        assert got.status_code == 502, got.text


def test_the_clis_trend_scales_to_its_maximum() -> None:
    assert sparkline([0.0, 5.0, 10.0]) == "▁▄█"
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert sparkline([]) == ""


def test_the_host_page_draws_the_hosts_graphs(ctx: EngineContext) -> None:
    users.create(ctx, "root2", "admin", PASSWORD)
    b = _ui_login(ctx, "root2")
    page = b.get("/hosts/h1")
    assert page.status_code == 200
    assert 'data-graphs="/ui/hosts/h1/stats"' in page.text
    assert b.get("/ui/hosts/h1/stats").json()["kind"] == "host"

