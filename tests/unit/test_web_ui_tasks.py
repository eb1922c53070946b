"""The web UI's task panel (templates/base.html, static/tasks.js) without a browser: on
every page, a polite live region, and its history (``/ui/events/recent``): the events the
user may see, newest first, an operation once with its latest progress, at most 50. The
browser test (an action from the CLI appearing without a reload) is in
tests/integration/test_web_ui.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_seed import engine_context
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from web_ui_login import log_in

from corral.api import PowerAction, VmStatePut
from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Project, Vm
from corral.engine.services import vms


def _projects(s: Session, host: Host) -> None:
    image = s.query(Image).filter_by(name="tiny").one()
    s.add_all([Project(name="a"), Project(name="b")])
    s.flush()
    for name, project in (("a.web", "a"), ("b.web", "b")):
        s.add(Vm(name=name, image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="stopped", desired_power="stopped",
                 project=project))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, prepare=_projects)


def _login(ctx: EngineContext, name: str, role: str = "admin",
           project: str | None = None) -> TestClient:
    return log_in(ctx, name, role, project)[0]


def _recent(b: TestClient) -> list[dict[str, Any]]:
    resp = b.get("/ui/events/recent")
    assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"
    found: list[dict[str, Any]] = resp.json()
    return found


def _what(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], str(e["data"].get("name") or e["data"].get("type"))) for e in events]


def test_every_page_has_the_panel_as_a_polite_live_region(ctx: EngineContext) -> None:
    b = _login(ctx, "root")
    for path in ("/", "/vms", "/vms/a.web", "/hosts", "/vms/new"):
        page = b.get(path).text
        panel = page[page.index('<details id="tasks"'):page.index("</details>")]
        assert 'data-recent="/ui/events/recent"' in panel, path
        assert 'aria-live="polite"' in panel and 'aria-relevant="additions"' in panel
        assert "<summary>" in panel and " open" not in panel.split(">")[0]  # tasks.js opens it
        assert '<script src="/static/tasks.js" defer>' in page
    assert b.get("/static/tasks.js").status_code == 200
    login = TestClient(create_app(ctx), base_url="https://testserver").get("/login").text
    assert 'id="tasks"' not in login  # nothing to show before a login


def test_the_history_is_what_the_user_may_see_newest_first(ctx: EngineContext) -> None:
    ctx.bus.publish("vm", {"name": "a.web", "state": "running"})
    ctx.bus.publish("vm", {"name": "b.web", "state": "running"})
    ctx.bus.publish("host", {"name": "h1", "status": "maintenance"})
    ctx.bus.publish("vm", {"name": "a.web", "state": "stopped"})
    admin = _recent(_login(ctx, "root"))
    assert _what(admin) == [("vm", "a.web"), ("host", "h1"), ("vm", "b.web"), ("vm", "a.web")]
    assert [e["data"].get("state") for e in admin if e["type"] == "vm"] == [
        "stopped", "running", "running"]
    mine = _recent(_login(ctx, "ann", "user", project="a"))
    assert _what(mine) == [("vm", "a.web"), ("vm", "a.web")]  # not b's, not the host's


def test_an_operation_shows_once_with_its_latest_progress(ctx: EngineContext) -> None:
    for progress, status in ((0, "pending"), (40, "running"), (70, "running")):
        ctx.bus.publish("operation", {"id": "op-1", "type": "vm.start", "status": status,
                                      "progress": progress, "resources": {"vms": ["a.web"]},
                                      "project": "a"})
    ctx.bus.publish("vm", {"name": "a.web", "state": "creating"})
    seen = _recent(_login(ctx, "root"))
    assert _what(seen) == [("vm", "a.web"), ("operation", "vm.start")]
    assert (seen[1]["data"]["progress"], seen[1]["data"]["status"]) == (70, "running")


def test_after_a_restart_the_operations_come_from_the_database(ctx: EngineContext) -> None:
    op = vms.change_state(ctx, "a.web", VmStatePut(action=PowerAction.START))
    ctx.bus.recent.clear()  # an engine restarted: no event of it
    mine = _recent(_login(ctx, "bob", "user", project="a"))
    assert [e["data"]["id"] for e in mine if e["type"] == "operation"] == [op.id]
    assert mine[0]["data"]["resources"]["vms"] == ["a.web"]
    assert _recent(_login(ctx, "eve", "user", project="b")) == []  # not b's


def test_the_history_keeps_the_last_fifty(ctx: EngineContext) -> None:
    for i in range(80):
        ctx.bus.publish("vm", {"name": "a.web", "state": "running", "message": f"n{i}"})
    found = _recent(_login(ctx, "root"))
    assert len(found) == 50
    assert found[0]["data"]["message"] == "n79" and found[-1]["data"]["message"] == "n30"
