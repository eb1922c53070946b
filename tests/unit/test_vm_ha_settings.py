"""A VM's HA settings (`vm create|set --ha`, `--ha-priority`, `--restart-policy`) through the
API and the CLI, with a stand-in agent that says yes to everything: they are stored and
shown, checked (422 naming the field), and --ha is refused for a VM with a disk only its host
reaches (the host's own storage, a dir pool), whether at create, at set or by attaching a
dir-pool volume later."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import QuickHost
from cli_node import cli, serving_node
from engine_seed import admin_client, engine_context
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, StoragePool, Vm, Volume

AGENT = QuickHost()


def _prepare(s: Session, host: Host) -> None:
    """Pools ``shared1`` (every host) and ``local1`` (a dir pool of h1, volume ``scratch``);
    stopped VMs ``web`` (root disk on shared1) and ``box`` (the host's own storage)."""
    shared = StoragePool(name="shared1", type="shared", path="/pools/shared1", status="ready")
    local = StoragePool(name="local1", type="dir", path="/pools/local1", host_id=host.id,
                        status="ready")
    s.add_all([shared, local])
    s.flush()
    s.add(Volume(pool_id=local.id, name="scratch", format="qcow2", size=1 << 30,
                 status="ready"))
    image = s.query(Image).filter_by(name="tiny").one()
    for name, pool in (("web", shared.id), ("box", None)):
        s.add(Vm(name=name, image_id=image.id, host_id=host.id, root_pool_id=pool, cpus=1,
                 memory_mib=64, disk_bytes=64 << 20, state="stopped", desired_power="stopped"))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, AGENT, _prepare)


@pytest.fixture
def admin(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    return error


def _set(ctx: EngineContext, admin: TestClient, name: str, **body: Any) -> None:
    resp = admin.patch(f"/api/v1/vms/{name}", json=body)
    assert resp.status_code == 202, resp.text
    op = ctx.ops.wait(resp.json()["id"], timeout=30)
    assert op.status.value == "success", op


def _ha(admin: TestClient, name: str) -> tuple[bool, int, str, str | None]:
    vm = admin.get(f"/api/v1/vms/{name}").json()
    return vm["ha"], vm["ha_priority"], vm["restart_policy"], vm["ha_reason"]


def test_a_vm_is_not_ha_until_asked(admin: TestClient) -> None:
    assert _ha(admin, "web") == (False, 0, "always", None)


def test_turning_ha_on_copies_the_image_to_the_other_hosts_once(
        ctx: EngineContext, admin: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """As `vm create --ha` does (vm_ha.spread_image, tested with real hosts in the lab): a
    VM made HA later must find its image where it may be recovered."""
    from corral.engine.services import vm_ha

    spread: list[str] = []
    monkeypatch.setattr(vm_ha, "spread_image", lambda _ctx, _op, vm_id: spread.append(vm_id))
    with ctx.db.session() as s:
        web = s.query(Vm).filter_by(name="web").one().id
    _set(ctx, admin, "web", ha=True)
    _set(ctx, admin, "web", ha_priority=5)  # already HA: nothing to copy again
    assert spread == [web]


def test_ha_is_set_shown_and_taken_back(ctx: EngineContext, admin: TestClient) -> None:
    _set(ctx, admin, "web", ha=True, ha_priority=100, restart_policy="on-failure")
    assert _ha(admin, "web") == (True, 100, "on-failure", None)
    _set(ctx, admin, "web", ha_priority=7)  # the others stay as they are
    assert _ha(admin, "web") == (True, 7, "on-failure", None)
    _set(ctx, admin, "web", ha=False)
    assert _ha(admin, "web") == (False, 7, "on-failure", None)


@pytest.mark.parametrize(("body", "field"), [
    ({"ha_priority": 1001}, "ha_priority"), ({"ha_priority": -1}, "ha_priority"),
    ({"restart_policy": "sometimes"}, "restart_policy"), ({"ha": "maybe"}, "ha")])
def test_bad_ha_settings_are_a_422_naming_the_field(admin: TestClient, body: dict[str, Any],
                                                    field: str) -> None:
    error = _error(admin.patch("/api/v1/vms/web", json=body), 422)
    assert field in str(error)
    assert _ha(admin, "web") == (False, 0, "always", None)


def test_ha_is_refused_for_a_root_disk_in_the_hosts_own_storage(admin: TestClient) -> None:
    error = _error(admin.patch("/api/v1/vms/box", json={"ha": True}), 422)
    assert error["field"] == "ha"
    assert "host's own storage" in error["message"] and "--pool SHARED_POOL" in error["message"]
    assert _ha(admin, "box")[0] is False


def test_ha_is_refused_for_a_vm_with_a_dir_pool_volume(ctx: EngineContext,
                                                       admin: TestClient) -> None:
    with ctx.db.session() as s:
        web = s.query(Vm).filter_by(name="web").one()
        s.query(Volume).filter_by(name="scratch").one().vm_id = web.id
    error = _error(admin.patch("/api/v1/vms/web", json={"ha": True}), 422)
    assert error["field"] == "ha" and "volume local1/scratch" in error["message"]


def test_a_dir_pool_volume_is_not_attached_to_an_ha_vm(ctx: EngineContext,
                                                       admin: TestClient) -> None:
    _set(ctx, admin, "web", ha=True)
    error = _error(admin.post("/api/v1/vms/web/disks",
                              json={"volume": "local1/scratch"}), 422)
    assert error["field"] == "volume" and "HA" in error["message"]
    with ctx.db.session() as s:
        assert s.query(Volume).filter_by(name="scratch").one().vm_id is None


def test_create_refuses_ha_on_the_hosts_storage_and_keeps_it_on_a_shared_pool(
        ctx: EngineContext, admin: TestClient) -> None:
    error = _error(admin.post("/api/v1/vms", json={"name": "db", "image": "tiny", "ha": True}),
                   422)
    assert error["field"] == "ha" and "--pool SHARED_POOL" in error["message"]
    assert admin.get("/api/v1/vms/db").status_code == 404  # nothing left behind

    AGENT.close()  # the create's operation waits: the row is as the request made it
    try:
        resp = admin.post("/api/v1/vms", json={"name": "db", "image": "tiny", "pool": "shared1",
                                               "ha": True, "ha_priority": 1000,
                                               "restart_policy": "on-failure"})
        assert resp.status_code == 202, resp.text
        assert _ha(admin, "db") == (True, 1000, "on-failure", None)
    finally:
        AGENT.open()
    ctx.ops.wait(resp.json()["id"], timeout=30)


def test_the_cli_sets_shows_and_refuses(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with serving_node(tmp_path, monkeypatch, AGENT, _prepare):
        done = cli("vm", "set", "web", "--ha", "--ha-priority", "50", "--restart-policy",
                   "on-failure", "--wait")
        assert done.exit_code == 0, done.output
        shown = cli("vm", "show", "web").output
        assert "ha             True" in shown and "ha_priority    50" in shown
        assert "restart_policy on-failure" in shown
        listed = cli("vm", "list").output
        assert "yes (50)" in listed
        refused = cli("vm", "create", "db", "--image", "tiny", "--ha")
        assert refused.exit_code != 0
        assert "--pool SHARED_POOL" in refused.output
        assert cli("vm", "set", "web", "--no-ha", "--wait").exit_code == 0
        assert "ha             False" in cli("vm", "show", "web").output


def test_the_migration_makes_existing_vms_not_ha_and_its_downgrade_drops_it(
        tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from corral.engine.db.session import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0019_evacuation")
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO images (id, name, format, status, virtual_size, "
                          "file_size, created_at) VALUES ('i1', 'tiny', 'qcow2', 'ready', 1, 1, "
                          "'2026-01-01')"))
        c.execute(sa.text("INSERT INTO vms (id, name, image_id, cpus, memory_mib, disk_bytes, "
                          "desired_power, state, created_at) VALUES ('v1', 'a', 'i1', 1, 64, 1, "
                          "'running', 'running', '2026-01-01')"))
    command.upgrade(cfg, "0020_vm_ha")
    with eng.begin() as c:
        row = c.execute(sa.text("SELECT ha, ha_priority, restart_policy, ha_restarts, "
                                "ha_reason FROM vms")).one()
        assert tuple(row) == (0, 0, "always", "[]", None)
    command.downgrade(cfg, "0019_evacuation")
    with eng.begin() as c:
        columns = {col["name"] for col in sa.inspect(c).get_columns("vms")}
        assert not {"ha", "ha_priority", "restart_policy", "ha_restarts", "ha_reason"} & columns
    eng.dispose()
