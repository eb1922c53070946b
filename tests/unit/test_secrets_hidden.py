"""Secrets stay secret: cloud-init user-data and password hashes are written, never read back
by a VM's show or list; only ``GET /api/v1/vms/{name}/cloud-init`` returns them, to callers
with ``vm.secrets`` (operators and admins). No operation (as the API shows it, or as its row
keeps it once done), no event and no log line carries them.

The engine runs for real (SQLite, routes, services, operations) against a stand-in agent that
says yes at once (api_server.QuickHost).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_server import QuickHost
from engine_seed import add_stopped_vm, admin_client, client_as, engine_context
from starlette.testclient import TestClient

from corral.api import CloudInit
from corral.engine.context import EngineContext
from corral.engine.db.models import Operation

KEY = "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519" + b"\1" * 36).decode() + " me"
# Markers that appear nowhere but in the secrets (JSON escapes the newlines of a whole text).
USER_DATA = "#cloud-config\nruncmd:\n- echo marker-ud-6f1c2e\n"
PASSWORD_HASH = "$6$salt6f1c$" + "H" * 86
NEW_USER_DATA = "#cloud-config\nruncmd:\n- echo marker-ud-93bd70\n"
NEW_PASSWORD_HASH = "$6$salt93bd$" + "K" * 86
MARKERS = ("marker-ud-6f1c2e", "salt6f1c", "marker-ud-93bd70", "salt93bd")


def _leaks(text: str) -> list[str]:
    return [m for m in MARKERS if m in text]


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    """Host h1 (a stand-in agent), and a stopped VM ``idle`` with user-data, a password hash
    and an SSH key."""
    yield from engine_context(tmp_path, QuickHost(), lambda s, host: add_stopped_vm(
        s, host, CloudInit(user="debian", ssh_authorized_keys=[KEY],
                           password_hash=PASSWORD_HASH, user_data=USER_DATA)))


def _wait(client: TestClient, op_id: str) -> dict[str, object]:
    op = client.get(f"/api/v1/operations/{op_id}/wait", params={"timeout": 30}).json()
    assert op["status"] in ("success", "failure", "cancelled"), op
    return op  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", ["viewer", "user"])
def test_a_vms_show_and_list_hide_the_secrets(ctx: EngineContext, role: str) -> None:
    client = client_as(ctx, role)
    shown = client.get("/api/v1/vms/idle")
    listed = client.get("/api/v1/vms")
    assert shown.status_code == 200 and listed.status_code == 200, shown.text
    assert _leaks(shown.text) == [] and _leaks(listed.text) == []
    ci = shown.json()["cloud_init"]
    assert ci["user_data"] is None and ci["password_hash"] is None
    assert ci["user_data_set"] is True and ci["password_hash_set"] is True
    assert ci["user"] == "debian" and ci["ssh_authorized_keys"] == [KEY]  # not secrets
    assert [v["cloud_init"] for v in listed.json()] == [ci]


def test_admins_and_operators_read_them_through_the_secrets_route(ctx: EngineContext) -> None:
    for client in (admin_client(ctx), client_as(ctx, "operator")):
        whole = client.get("/api/v1/vms/idle/cloud-init")
        assert whole.status_code == 200, whole.text
        assert whole.json()["user_data"] == USER_DATA
        assert whole.json()["password_hash"] == PASSWORD_HASH
        assert whole.json()["ssh_authorized_keys"] == [KEY]
        # ...and a show is the same for them: the secrets only on the explicit request
        assert _leaks(client.get("/api/v1/vms/idle").text) == []
    assert admin_client(ctx).get("/api/v1/vms/nope/cloud-init").status_code == 404


@pytest.mark.parametrize("role", ["viewer", "user"])
def test_the_secrets_route_is_403_without_vm_secrets(ctx: EngineContext, role: str) -> None:
    resp = client_as(ctx, role).get("/api/v1/vms/idle/cloud-init")
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "forbidden" and _leaks(resp.text) == []


def test_a_vm_without_user_data_says_so(ctx: EngineContext) -> None:
    admin = admin_client(ctx)
    op = admin.patch("/api/v1/vms/idle", json={"cloud_init": {"hostname": "plain"}})
    assert op.status_code == 202, op.text
    assert _wait(admin, op.json()["id"])["status"] == "success"
    ci = admin.get("/api/v1/vms/idle").json()["cloud_init"]
    assert ci["hostname"] == "plain"
    assert ci["user_data_set"] is False and ci["password_hash_set"] is False


def test_no_operation_event_or_log_line_carries_them(ctx: EngineContext,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = admin_client(ctx)
    viewer = client_as(ctx, "viewer")
    made = admin.post("/api/v1/vms", json={
        "name": "made", "image": "tiny", "start": False,
        "cloud_init": {"user_data": USER_DATA, "password_hash": PASSWORD_HASH}})
    changed = admin.patch("/api/v1/vms/idle", json={
        "cloud_init": {"user_data": NEW_USER_DATA, "password_hash": NEW_PASSWORD_HASH}})
    assert made.status_code == 202 and changed.status_code == 202, (made.text, changed.text)
    assert _leaks(made.text + changed.text) == []
    # The create fails on the stand-in host (its failure path runs too); the change succeeds.
    ops = [_wait(admin, made.json()["id"]), _wait(admin, changed.json()["id"])]
    assert ops[1]["status"] == "success"
    assert _leaks(json.dumps(ops)) == []
    for client in (admin, viewer):
        for op_id in (made.json()["id"], changed.json()["id"]):
            assert _leaks(client.get(f"/api/v1/operations/{op_id}").text) == []
        assert _leaks(client.get("/api/v1/operations").text) == []
    # What the SSE stream sends: every event published (the bus keeps the recent ones).
    assert ctx.bus.recent, "no event was published"
    assert _leaks("".join(e.model_dump_json() for e in ctx.bus.recent)) == []
    # What the engine keeps of the operations once done: not the secrets either.
    with ctx.db.session() as s:
        assert _leaks(json.dumps([op.params for op in s.query(Operation)])) == []
    assert _leaks(caplog.text) == []
    # The VM has its new secrets: scrubbing the operation took nothing from the VM.
    whole = admin.get("/api/v1/vms/idle/cloud-init").json()
    assert (whole["user_data"], whole["password_hash"]) == (NEW_USER_DATA, NEW_PASSWORD_HASH)


def test_a_dropped_update_keeps_no_secret_in_its_operation(ctx: EngineContext) -> None:
    """Cancelled before it ran (its VM busy with another operation): the secrets go too."""
    admin = admin_client(ctx)
    host = QuickHost()
    host.close()  # the first operation waits on the host, holding the VM's lock
    ctx.agent_transport = httpx.MockTransport(host)
    try:
        first = admin.patch("/api/v1/vms/idle", json={"description": "busy"})
        second = admin.patch("/api/v1/vms/idle", json={
            "cloud_init": {"user_data": NEW_USER_DATA, "password_hash": NEW_PASSWORD_HASH}})
        assert first.status_code == 202 and second.status_code == 202, second.text
        cancelled = admin.delete(f"/api/v1/operations/{second.json()['id']}")
        assert cancelled.status_code == 200, cancelled.text
    finally:
        host.open()
    _wait(admin, first.json()["id"])
    assert _wait(admin, second.json()["id"])["status"] == "cancelled"
    with ctx.db.session() as s:
        row = s.get(Operation, second.json()["id"])
        assert row is not None and _leaks(json.dumps(row.params)) == []

