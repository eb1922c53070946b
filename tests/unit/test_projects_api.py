"""Projects through the API: an admin makes, lists, shows and deletes them; a project that
still owns a VM is not deleted (the answer says what it holds), nor is `default`; quotas
are set, cleared and shown against the project's use; a user sees only the projects it
holds a role on, and one it does not see answers 404 as if it did not exist."""

from __future__ import annotations

from engine_seed import PASSWORD, login
from starlette.testclient import TestClient

from corral.api.projects import QuotaSet
from corral.engine.context import EngineContext
from corral.engine.db.models import Image, Project, RoleAssignment, Token, Vm
from corral.engine.services import quotas, users

GIB = 1 << 30


def add_vm(ctx: EngineContext, project: str, name: str, cpus: int = 2,
           memory_mib: int = 512) -> None:
    """A VM row of ``project``, as a finished create leaves it (no agent is needed here)."""
    with ctx.db.session() as s:
        s.add(Vm(name=f"{project}.{name}", project=project, cpus=cpus, memory_mib=memory_mib,
                 disk_bytes=GIB, image_id=s.query(Image).filter_by(name="tiny").one().id,
                 state="stopped"))


def test_an_admin_creates_lists_shows_and_deletes_a_project(admin: TestClient) -> None:
    made = admin.post("/api/v1/projects", json={"name": "web", "description": "the shop"})
    assert made.status_code == 201, made.text
    assert made.json()["description"] == "the shop"
    assert set(made.json()["quotas"]) >= {"vms", "vcpus", "memory", "disk"}
    assert all(v is None for v in made.json()["quotas"].values())  # no limit until set
    assert [p["name"] for p in admin.get("/api/v1/projects").json()] == ["default", "web"]
    shown = admin.get("/api/v1/projects/web").json()
    assert shown["usage"]["vms"] == 0 and shown["holds"]["vms"] == 0
    assert admin.post("/api/v1/projects", json={"name": "web"}).status_code == 409
    assert admin.delete("/api/v1/projects/web").status_code == 204
    assert admin.get("/api/v1/projects/web").status_code == 404
    assert admin.delete("/api/v1/projects/web").status_code == 404


def test_bad_project_input_is_a_clear_422(admin: TestClient) -> None:
    for body, field in [({"name": "bad name"}, "name"), ({"name": "a.b"}, "name"),
                        ({"name": "p", "colour": "red"}, "colour"),
                        ({"name": "p", "quotas": {"vms": -1}}, "vms"),
                        ({"name": "p", "quotas": {"cars": 3}}, "cars")]:
        resp = admin.post("/api/v1/projects", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert field in str(resp.json()["error"]), resp.json()
    assert admin.get("/api/v1/projects/p").status_code == 404  # nothing was made


def test_a_project_holding_a_vm_is_not_deleted_nor_is_default(
        ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/projects", json={"name": "p"})
    add_vm(ctx, "p", "web")
    refused = admin.delete("/api/v1/projects/p")
    assert refused.status_code == 409
    assert "1 vms" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"]["holds"] == {"vms": 1}
    assert admin.get("/api/v1/projects/p").json()["holds"]["vms"] == 1
    with ctx.db.session() as s:
        s.query(Vm).filter_by(project="p").delete()
    assert admin.delete("/api/v1/projects/p").status_code == 204
    refused = admin.delete("/api/v1/projects/default")
    assert refused.status_code == 409 and "default" in refused.json()["error"]["message"]


def test_every_quota_the_engine_counts_can_be_set() -> None:
    # the snapshots quota was counted and checked but missing here: nobody could set it
    assert set(QuotaSet.model_fields) == set(quotas.QUOTAS)


def test_quotas_are_set_cleared_and_shown_against_use(
        ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/projects", json={"name": "p", "quotas": {"vms": 5}})
    add_vm(ctx, "p", "a", cpus=2, memory_mib=1024)
    add_vm(ctx, "p", "b", cpus=4, memory_mib=1024)
    resp = admin.put("/api/v1/projects/p/quotas", json={"vcpus": 16, "memory": 32 * GIB})
    assert resp.status_code == 200, resp.text
    shown = admin.get("/api/v1/projects/p").json()
    assert shown["quotas"]["vms"] == 5  # left out: kept
    assert shown["quotas"]["vcpus"] == 16 and shown["quotas"]["memory"] == 32 * GIB
    assert shown["quotas"]["disk"] is None
    assert shown["usage"]["vms"] == 2 and shown["usage"]["vcpus"] == 6
    assert shown["usage"]["memory"] == 2 * GIB and shown["usage"]["disk"] == 2 * GIB
    cleared = admin.put("/api/v1/projects/p/quotas", json={"vms": None}).json()
    assert cleared["quotas"]["vms"] is None and cleared["quotas"]["vcpus"] == 16
    for body in ({"vcpus": -1}, {"gpus": 1}, {"vcpus": "many"}):
        assert admin.put("/api/v1/projects/p/quotas", json=body).status_code == 422, body
    assert admin.put("/api/v1/projects/nope/quotas", json={"vms": 1}).status_code == 404


def test_a_user_sees_only_the_projects_it_holds_a_role_on(
        ctx: EngineContext, admin: TestClient) -> None:
    for name in ("p", "q"):
        admin.post("/api/v1/projects", json={"name": name})
    users.create(ctx, "alice", "none", PASSWORD)
    made = admin.post("/api/v1/role-assignments",
                      json={"subject": "alice", "role": "operator", "project": "p"})
    assert made.status_code == 201, made.text
    alice = login(ctx, "alice")
    assert [p["name"] for p in alice.get("/api/v1/projects").json()] == ["p"]
    assert alice.get("/api/v1/projects/p").status_code == 200
    hidden = alice.get("/api/v1/projects/q")
    assert hidden.status_code == 404
    assert alice.get("/api/v1/projects/nope").json()["error"] == hidden.json()["error"] | {
        "message": "project nope not found"}  # the same answer: no existence leak
    assert alice.post("/api/v1/projects", json={"name": "r"}).status_code == 403
    assert alice.delete("/api/v1/projects/p").status_code == 403
    assert alice.put("/api/v1/projects/p/quotas", json={"vms": 99}).status_code == 403


def test_deleting_a_project_drops_the_role_assignments_on_it(
        ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/projects", json={"name": "p"})
    users.create(ctx, "alice", "none", PASSWORD)
    admin.post("/api/v1/role-assignments",
               json={"subject": "alice", "role": "user", "project": "p"})
    admin.post("/api/v1/role-assignments", json={"subject": "@ops", "role": "operator",
                                                 "project": "p"})
    bound = admin.post("/api/v1/users/alice/tokens", json={"name": "ci", "project": "p"})
    assert bound.status_code == 201, bound.text
    assert admin.delete("/api/v1/projects/p").status_code == 204
    with ctx.db.session() as s:
        assert s.query(RoleAssignment).filter_by(project="p").count() == 0
        assert s.query(Token).filter_by(project="p").count() == 0  # bound to it: revoked
        assert s.query(Project).filter_by(name="p").count() == 0
    # made again under the same name, it opens to nobody of the old one
    admin.post("/api/v1/projects", json={"name": "p"})
    alice = login(ctx, "alice")
    assert alice.get("/api/v1/whoami").json()["projects"] == {"*": ["none"]}
    assert alice.get("/api/v1/projects").status_code == 403  # it holds no role anywhere
