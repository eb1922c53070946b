"""Custom roles and role assignments through the API: a role made of permission patterns,
given to a user on one project, lets that user do what it holds there and nothing elsewhere;
directory groups are assigned as @GROUP; an unknown permission pattern is a 422, a role in
use is not deleted (409), built-in roles are neither made nor deleted."""

from __future__ import annotations

from engine_seed import PASSWORD, login
from starlette.testclient import TestClient

from corral.engine.context import EngineContext
from corral.engine.permissions import PERMISSIONS
from corral.engine.services import users


def test_roles_list_the_builtins_then_custom_ones(admin: TestClient) -> None:
    made = admin.post("/api/v1/roles", json={"name": "vmrunner", "description": "runs VMs",
                                             "permissions": ["vm.*", "snapshot.read"]})
    assert made.status_code == 201, made.text
    perms = made.json()["permissions"]
    assert perms == sorted(perms)  # kept sorted, the patterns expanded
    assert {"vm.create", "vm.delete", "vm.power", "snapshot.read"} <= set(perms)
    assert "snapshot.create" not in perms and "network.create" not in perms
    listed = admin.get("/api/v1/roles").json()
    assert [r["name"] for r in listed] == ["none", "viewer", "user", "operator", "admin",
                                           "vmrunner"]
    assert [r["builtin"] for r in listed] == [True] * 5 + [False]
    assert admin.get("/api/v1/permissions").json() == list(PERMISSIONS)
    assert admin.post("/api/v1/roles", json={"name": "vmrunner",
                                             "permissions": ["vm.read"]}).status_code == 409


def test_bad_roles_are_refused(admin: TestClient) -> None:
    unknown = admin.post("/api/v1/roles", json={"name": "r", "permissions": ["vm.fly"]})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["field"] == "permissions"
    assert "vm.fly" in unknown.json()["error"]["message"]
    for body in ({"name": "r", "permissions": []}, {"name": "bad name", "permissions": ["vm.*"]},
                 {"name": "r", "permissions": ["vm.*"], "extra": 1}):
        assert admin.post("/api/v1/roles", json=body).status_code == 422, body
    builtin = admin.post("/api/v1/roles", json={"name": "admin", "permissions": ["vm.read"]})
    assert builtin.status_code == 409
    assert admin.delete("/api/v1/roles/viewer").status_code == 409
    assert admin.delete("/api/v1/roles/nope").status_code == 404


def test_a_custom_role_on_one_project_opens_that_project_only(
        ctx: EngineContext, admin: TestClient) -> None:
    for name in ("p", "q"):
        admin.post("/api/v1/projects", json={"name": name})
    admin.post("/api/v1/roles", json={"name": "vmrunner",
                                      "permissions": ["vm.*", "project.read"]})
    users.create(ctx, "alice", "none", PASSWORD)
    made = admin.post("/api/v1/role-assignments",
                      json={"subject": "alice", "role": "vmrunner", "project": "p"})
    assert made.status_code == 201, made.text
    assert made.json() | {"created_at": None} == {"subject": "alice", "kind": "user",
                                                  "role": "vmrunner", "project": "p",
                                                  "created_at": None}
    alice = login(ctx, "alice")
    assert [p["name"] for p in alice.get("/api/v1/projects").json()] == ["p"]
    assert alice.get("/api/v1/projects/q").status_code == 404
    assert alice.get("/api/v1/vms", params={"project": "p"}).status_code == 200
    assert alice.get("/api/v1/vms", params={"project": "q"}).status_code == 404
    assert alice.get("/api/v1/networks", params={"project": "p"}).status_code == 403
    assert alice.get("/api/v1/roles").status_code == 403  # roles are the admins' business
    whoami = alice.get("/api/v1/whoami").json()
    assert whoami["projects"]["p"] == ["vmrunner"]


def test_assignments_of_users_and_directory_groups(
        ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/projects", json={"name": "p"})
    users.create(ctx, "alice", "none", PASSWORD)
    group = admin.post("/api/v1/role-assignments",
                       json={"subject": "@ops", "role": "operator", "project": "p"})
    assert group.status_code == 201, group.text
    assert group.json()["kind"] == "group" and group.json()["subject"] == "@ops"
    everywhere = admin.post("/api/v1/role-assignments", json={"subject": "alice", "role": "viewer"})
    assert everywhere.json()["project"] == "*"  # no project: every one
    again = admin.post("/api/v1/role-assignments", json={"subject": "alice", "role": "viewer"})
    assert again.status_code == 409
    rows = admin.get("/api/v1/role-assignments").json()
    assert {(r["subject"], r["role"], r["project"]) for r in rows} == {
        ("@ops", "operator", "p"), ("alice", "viewer", "*")}
    only_p = admin.get("/api/v1/role-assignments", params={"project": "p"}).json()
    assert [r["subject"] for r in only_p] == ["@ops"]
    of_alice = admin.get("/api/v1/role-assignments", params={"subject": "alice"}).json()
    assert [r["role"] for r in of_alice] == ["viewer"]
    gone = admin.delete("/api/v1/role-assignments",
                        params={"subject": "@ops", "role": "operator", "project": "p"})
    assert gone.status_code == 204
    assert admin.delete("/api/v1/role-assignments",
                        params={"subject": "@ops", "role": "operator",
                                "project": "p"}).status_code == 404
    assert [r["subject"] for r in admin.get("/api/v1/role-assignments").json()] == ["alice"]


def test_an_assignment_names_what_exists(ctx: EngineContext, admin: TestClient) -> None:
    users.create(ctx, "alice", "none", PASSWORD)
    for body, status, field in [
            ({"subject": "bob", "role": "viewer"}, 404, "subject"),  # no such user
            ({"subject": "alice", "role": "god"}, 422, "role"),
            ({"subject": "alice", "role": "viewer", "project": "nope"}, 404, "project"),
            ({"subject": "alice", "role": "none"}, 422, "role"),
            ({"subject": "@", "role": "viewer"}, 422, "subject")]:
        resp = admin.post("/api/v1/role-assignments", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert resp.json()["error"]["field"] == field, resp.json()


def test_a_role_in_use_is_not_deleted(ctx: EngineContext, admin: TestClient) -> None:
    admin.post("/api/v1/projects", json={"name": "p"})
    admin.post("/api/v1/roles", json={"name": "auditor", "permissions": ["*.read"]})
    admin.post("/api/v1/role-assignments",
               json={"subject": "@auditors", "role": "auditor", "project": "p"})
    refused = admin.delete("/api/v1/roles/auditor")
    assert refused.status_code == 409
    assert "@auditors on p" in refused.json()["error"]["message"]
    admin.delete("/api/v1/role-assignments",
                 params={"subject": "@auditors", "role": "auditor", "project": "p"})
    assert admin.delete("/api/v1/roles/auditor").status_code == 204
    assert "auditor" not in [r["name"] for r in admin.get("/api/v1/roles").json()]
