"""The web UI's access admin forms without a browser (engine/ui/admin_access_forms.py):
projects (create, delete, refused while they hold things), a project's quotas (use beside
each limit, units as the CLI takes them, empty for no limit), role assignments on a
project's page and on a user's, custom roles (create, delete). Each action: what a user
sees after it, the refusal by role (403) and for a project not seen (404), and bad input
shown next to its field with what was typed kept."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_seed import PASSWORD, engine_context
from sqlalchemy.orm import Session
from web_ui_login import log_in, sign_in

from corral.engine.access import Access
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Project, Vm
from corral.engine.services import audit, projects, roles, users

EVERYTHING = Access(scopes={"*": frozenset({"project.read"})}, cap=frozenset({"project.read"}))
GIB = 1 << 30


def _prepare(s: Session, host: Host) -> None:
    """Project a (2 VMs, 1 GiB of memory at most) with a stopped VM; project b, empty."""
    s.add_all([Project(name="a", quotas={"vms": 2, "memory": GIB}), Project(name="b")])
    s.flush()
    image = s.query(Image).filter_by(name="tiny").one()
    s.add(Vm(name="a.web", image_id=image.id, host_id=host.id, cpus=1, memory_mib=512,
             disk_bytes=64 << 20, state="stopped", desired_power="stopped", project="a"))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, prepare=_prepare)


def _field_error(page: str, field: str) -> str:
    """The error shown next to a form field (its ``err-ID`` paragraph)."""
    found = re.search(rf'id="err-{field}" role="alert">([^<]*)<', page)
    assert found, f"no error next to {field}: " + page[page.find("<form"):][:2000]
    return html.unescape(found.group(1))


def _value(page: str, field: str) -> str:
    found = re.search(rf'<input id="{field}" name="[^"]*" value="([^"]*)"', page)
    assert found, f"no input {field}"
    return html.unescape(found.group(1))


def _limits(ctx: EngineContext, name: str) -> dict[str, int | None]:
    return projects.show(ctx, name, EVERYTHING).quotas


# -- projects -------------------------------------------------------------------------------

def test_a_created_project_opens_its_page_and_shows_in_the_list(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    assert 'action="/projects"' in b.get("/projects").text
    resp = b.post("/projects", data={"csrf": csrf, "name": "web", "description": "Web team"},
                  follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/projects/web"
    page = b.get("/projects/web").text
    assert "<h1>Project web</h1>" in page and "Web team" in page
    listed = b.get("/projects").text
    assert 'href="/projects/web"' in listed and "Web team" in listed
    assert _limits(ctx, "web")["vms"] is None  # no limits until its page sets them


def test_a_bad_project_is_refused_next_to_its_field(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    resp = b.post("/projects", data={"csrf": csrf, "name": "Bad Name!", "description": "x"})
    assert resp.status_code == 422 and _field_error(resp.text, "p-name")
    assert _value(resp.text, "p-name") == "Bad Name!" and _value(resp.text, "p-description") == "x"
    resp = b.post("/projects", data={"csrf": csrf, "name": "a"})
    assert resp.status_code == 409 and _field_error(resp.text, "p-name") == "Project a exists"
    resp = b.post("/projects", data={"csrf": csrf, "name": "long", "description": "d" * 300})
    assert resp.status_code == 422 and "255" in _field_error(resp.text, "p-description")
    assert b.post("/projects", data={"csrf": csrf}).status_code == 422


def test_delete_asks_naming_the_project_and_a_project_in_use_is_refused_clearly(
        ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    listed = b.get("/projects").text
    assert 'data-confirm="Delete project b? Its role assignments' in listed
    assert 'action="/projects/default/delete"' not in listed  # default stays
    resp = b.post("/projects/a/delete", data={"csrf": csrf})
    assert resp.status_code == 409
    assert ('role="alert" id="notice">Project a was not deleted: project a still holds 1 vms: '
            'delete them first.<') in resp.text
    assert 'href="/projects/a"' in resp.text  # the list, with a still in it
    resp = b.post("/projects/b/delete", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/projects"
    assert 'href="/projects/b"' not in b.get("/projects").text
    assert b.post("/projects/b/delete", data={"csrf": csrf}).status_code == 404


def test_project_actions_need_an_engine_wide_role(ctx: EngineContext) -> None:
    ann, csrf = log_in(ctx, "ann", "user", project="a")
    page = ann.get("/projects/a").text
    assert "<h1>Project a</h1>" in page and "1 of 2" in page  # the read-only quotas
    assert "Save quotas" not in page and "Assign role" not in page
    assert 'action="/projects"' not in ann.get("/projects").text
    for path, form in (("/projects", {"name": "x"}), ("/projects/a/delete", {}),
                       ("/projects/a/quotas", {"vms": "9"}),
                       ("/projects/a/roles", {"subject": "ann", "role": "admin"}),
                       ("/projects/a/roles/remove?subject=ann&role=user", {})):
        assert ann.post(path, data={"csrf": csrf, **form}).status_code == 403, path
    # an admin of project a alone: projects and roles are engine-wide (as in the API)
    pat, pcsrf = log_in(ctx, "pat", "admin", project="a")
    assert pat.post("/projects/a/quotas", data={"csrf": pcsrf, "vms": "9"}).status_code == 403
    assert pat.get("/projects/b").status_code == 404  # not its project: as if none
    assert _limits(ctx, "a")["vms"] == 2
    assert ann.post("/projects/a/quotas", data={"vms": "9"}).status_code == 403  # no CSRF


def test_another_or_no_project_answers_404(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    for path in ("/projects/nowhere/quotas", "/projects/nowhere/roles",
                 "/projects/nowhere/delete", "/projects/nowhere/roles/remove?subject=x&role=user"):
        assert b.post(path, data={"csrf": csrf, "vms": "1", "subject": "root",
                                  "role": "user"}).status_code == 404, path
    assert b.get("/projects/nowhere").status_code == 404


# -- quotas ---------------------------------------------------------------------------------

def test_the_quota_form_shows_use_beside_each_limit(ctx: EngineContext) -> None:
    b, _ = log_in(ctx, "root")
    page = b.get("/projects/a").text
    assert 'action="/projects/a/quotas"' in page and "Save quotas" in page
    assert _value(page, "q-vms") == "2" and _value(page, "q-memory") == "1G"
    assert _value(page, "q-vcpus") == ""  # no limit
    assert "1 of 2 (50 %)" in page and "512 MiB of 1.0 GiB (50 %)" in page  # VMs, memory
    assert '<label for="q-security_groups">Security groups</label>' in page
    assert '<label for="q-snapshots">Snapshots</label>' in page  # every quota the API sets


def test_quotas_set_with_units_and_empty_for_no_limit(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    form = {"csrf": csrf, "vms": "", "vcpus": "8", "memory": "2G", "disk": "500G",
            "volumes": "0", "networks": "", "security_groups": ""}
    resp = b.post("/projects/a/quotas", data=form, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/projects/a"
    limits = _limits(ctx, "a")
    assert limits["vms"] is None and limits["vcpus"] == 8 and limits["memory"] == 2 * GIB
    assert limits["disk"] == 500 * GIB and limits["volumes"] == 0
    assert limits["networks"] is None
    page = b.get("/projects/a").text
    assert _value(page, "q-memory") == "2G" and _value(page, "q-disk") == "500G"
    resp = b.post("/projects/a/quotas", data={**form, "memory": "1536"})  # a bare number: MiB
    assert resp.status_code == 200 and _limits(ctx, "a")["memory"] == 1536 << 20
    assert _value(resp.text, "q-memory") == "1536M"
    b.post("/projects/a/quotas", data={"csrf": csrf, "vcpus": "4"})  # the others not sent
    assert _limits(ctx, "a")["vcpus"] == 4 and _limits(ctx, "a")["memory"] == 1536 << 20


def test_bad_limits_are_refused_next_to_their_field_and_change_nothing(
        ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    base = {"csrf": csrf, "vms": "2", "vcpus": "", "memory": "1G", "disk": "",
            "volumes": "", "networks": "", "security_groups": ""}
    cases = [("vms", "many"), ("vcpus", "-1"), ("memory", "lots"), ("disk", "2X"),
             ("networks", "1.5"), ("vms", "9" * 19), ("disk", "99999999P")]
    for field, typed in cases:
        resp = b.post("/projects/a/quotas", data={**base, "vcpus": "16", field: typed})
        assert resp.status_code == 422, (field, typed, resp.status_code)
        assert _field_error(resp.text, f"q-{field}"), (field, typed)
        assert _value(resp.text, f"q-{field}") == typed  # what was typed stays
        assert "The quotas were not changed" in resp.text
    assert "whole number" in _field_error(
        b.post("/projects/a/quotas", data={**base, "vms": "many"}).text, "q-vms")
    assert _limits(ctx, "a")["vcpus"] is None and _limits(ctx, "a")["vms"] == 2


# -- role assignments -----------------------------------------------------------------------

def test_a_role_assigned_in_a_project_shows_and_holds(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    users.create(ctx, "bob", "none", PASSWORD)
    page = b.get("/projects/a").text
    assert '<option value="bob" >bob</option>' in page  # users and roles from lists
    assert '<option value="viewer" >viewer</option>' in page and 'value="none"' not in page
    resp = b.post("/projects/a/roles", data={"csrf": csrf, "subject": "bob", "role": "viewer"},
                  follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/projects/a#assignments"
    page = b.get("/projects/a").text
    assert ('data-confirm="Remove role viewer from bob in project a? It no longer holds '
            'from its next request on."') in page
    assert 'aria-label="Remove role viewer of bob"' in page
    bob = sign_in(ctx, "bob")
    assert bob.get("/projects/a").status_code == 200  # it holds: bob reads project a now
    assert [(e.project, e.status) for e in audit.listing(ctx, action="role.update")] == [
        ("a", 303)]
    resp = b.post("/projects/a/roles/remove?subject=bob&role=viewer", data={"csrf": csrf},
                  follow_redirects=False)
    assert resp.status_code == 303
    assert roles.list_assignments(ctx, subject="bob") == []
    assert "Remove role viewer of bob" not in b.get("/projects/a").text
    assert b.post("/projects/a/roles/remove?subject=bob&role=viewer",
                  data={"csrf": csrf}).status_code == 404


def test_a_bad_assignment_is_refused_next_to_its_field(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    log_in(ctx, "ann", "user", project="a")
    cases = [({"subject": ""}, "ra-subject", 422), ({"subject": "ghost"}, "ra-subject", 404),
             ({"role": "king"}, "ra-role", 422), ({"role": "none"}, "ra-role", 422),
             ({"role": "user"}, "ra-role", 409)]  # ann holds it already
    for change, field, status in cases:
        form = {"csrf": csrf, "subject": "ann", "role": "viewer", **change}
        resp = b.post("/projects/a/roles", data=form)
        assert resp.status_code == status, (change, resp.status_code)
        assert _field_error(resp.text, field), change
    resp = b.post("/projects/a/roles", data={"csrf": csrf, "subject": "ghost", "role": "user"})
    assert "User ghost not found" in _field_error(resp.text, "ra-subject")
    assert roles.list_assignments(ctx, subject="ann", project="a")[0].role == "user"


def test_a_users_page_shows_and_changes_its_assignments(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    log_in(ctx, "ann", "user", project="a")
    assert 'href="/users/ann"' in b.get("/users").text
    page = b.get("/users/ann").text
    assert "<h1>User ann</h1>" in page and 'href="/projects/a"' in page
    assert 'data-confirm="Remove role user from ann in project a?' in page
    assert '<option value="*" >every project (*)</option>' in page
    resp = b.post("/users/ann/roles", data={"csrf": csrf, "project": "*", "role": "viewer"},
                  follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/users/ann#assignments"
    assert "every project (*)</td>" in b.get("/users/ann").text
    for form, field, status in (({"project": ""}, "ua-project", 422),
                                ({"project": "nowhere"}, "ua-project", 404),
                                ({"role": "king"}, "ua-role", 422),
                                ({"project": "*"}, "ua-role", 409)):
        resp = b.post("/users/ann/roles", data={"csrf": csrf, "project": "b", "role": "viewer",
                                                **form})
        assert resp.status_code == status, (form, resp.status_code)
        assert _field_error(resp.text, field), form
    resp = b.post("/users/ann/roles/remove?project=a&role=user", data={"csrf": csrf},
                  follow_redirects=False)
    assert resp.status_code == 303
    assert [(a.project, a.role) for a in roles.list_assignments(ctx, subject="ann")] == [
        ("*", "viewer")]
    assert b.get("/users/ghost").status_code == 404
    assert b.post("/users/ghost/roles", data={"csrf": csrf, "project": "a",
                                              "role": "user"}).status_code == 404


def test_a_project_user_may_not_see_users_or_change_roles(ctx: EngineContext) -> None:
    ann, csrf = log_in(ctx, "ann", "user", project="a")
    assert ann.get("/users/ann").status_code == 403
    assert ann.post("/users/ann/roles", data={"csrf": csrf, "project": "a",
                                              "role": "admin"}).status_code == 403
    assert ann.post("/users/ann/roles/remove?project=a&role=user",
                    data={"csrf": csrf}).status_code == 403
    assert ann.post("/roles", data={"csrf": csrf, "name": "x",
                                    "permissions": "*"}).status_code == 403
    assert [a.role for a in roles.list_assignments(ctx, subject="ann")] == ["user"]


# -- custom roles ---------------------------------------------------------------------------

def test_a_custom_role_is_created_assigned_and_deleted_once_unused(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    page = b.get("/roles").text
    assert 'action="/roles"' in page and 'action="/roles/admin/delete"' not in page
    resp = b.post("/roles", data={"csrf": csrf, "name": "auditor", "description": "Reads",
                                  "permissions": "audit.read, *.read"}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/roles"
    page = b.get("/roles").text
    assert ">auditor<" in page and "audit.read" in page
    assert 'data-confirm="Delete role auditor? Refused while' in page
    assert '<option value="auditor" >auditor (custom)</option>' in b.get("/projects/a").text
    roles.assign(ctx, "root", "auditor", "b")
    resp = b.post("/roles/auditor/delete", data={"csrf": csrf})
    assert resp.status_code == 409
    assert "Role auditor was not deleted: role auditor is in use: root on b" in resp.text
    roles.unassign(ctx, "root", "auditor", "b")
    resp = b.post("/roles/auditor/delete", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and ">auditor<" not in b.get("/roles").text
    assert b.post("/roles/admin/delete", data={"csrf": csrf}).status_code == 409


def test_a_bad_role_is_refused_next_to_its_field(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    base = {"csrf": csrf, "name": "ops2", "description": "", "permissions": "vm.*"}
    cases = [({"permissions": "nothing.here"}, "r-permissions", 422),
             ({"permissions": ""}, "r-permissions", 422),
             ({"permissions": "VM READ"}, "r-permissions", 422),
             ({"name": "admin"}, "r-name", 409), ({"name": "bad name"}, "r-name", 422),
             ({"description": "d" * 300}, "r-description", 422)]
    for change, field, status in cases:
        resp = b.post("/roles", data={**base, **change})
        assert resp.status_code == status, (change, resp.status_code)
        assert _field_error(resp.text, field), change
        assert _value(resp.text, "r-permissions") == {**base, **change}["permissions"]
    assert "matches none" in _field_error(
        b.post("/roles", data={**base, "permissions": "nothing.here"}).text, "r-permissions")
    assert [r.name for r in roles.list_roles(ctx) if not r.builtin] == []
