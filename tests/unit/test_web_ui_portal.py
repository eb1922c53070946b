"""The web UI's user portal and admin pages without a browser (engine/ui/portal.py,
admin.py): the create-VM form (quota use shown, a refusal next to its field, the new VM's
page after a create), snapshots as a tree with take/revert/delete, the admin pages (200 for
an admin; 403 or 404 for a user of another project), user create with errors next to the
field, the audit log's filter. The browser tests are tests/integration/test_web_ui.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from engine_seed import PASSWORD, engine_context
from sqlalchemy.orm import Session
from web_ui_login import log_in

from corral.api import VmCreate
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Network, Project, Vm
from corral.engine.services import users
from corral.engine.services import vms as vm_service

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# The VM's snapshot tree as its agent reports it: base -> (patched -> current), (other)
SNAPSHOTS = [
    {"name": "base", "parent": None, "created_at": T0.isoformat(), "state": "stopped",
     "memory": False, "current": False},
    {"name": "other", "parent": "base", "created_at": (T0 + timedelta(hours=2)).isoformat(),
     "state": "stopped", "memory": False, "current": False},
    {"name": "patched", "parent": "base", "created_at": (T0 + timedelta(hours=1)).isoformat(),
     "state": "stopped", "memory": False, "current": False},
    {"name": "current", "parent": "patched", "created_at": (T0 + timedelta(hours=3)).isoformat(),
     "state": "stopped", "memory": False, "current": True},
]


def _agent(request: httpx.Request) -> httpx.Response:
    """A stand-in agent: the snapshot list of any domain; anything else is refused."""
    if request.method == "GET" and request.url.path.endswith("/snapshots"):
        return httpx.Response(200, json=SNAPSHOTS)
    return httpx.Response(503, json={"code": "unavailable", "message": "stand-in"})


def _projects(s: Session, host: Host) -> None:
    """Projects a (quota: 2 VMs, 1 GiB memory) and b, a stopped VM in each, a network and
    an image of b's own; the tiny image and the default network shared."""
    image = s.query(Image).filter_by(name="tiny").one()
    image.shared = True  # as an admin shares them: every project may use them
    s.query(Network).filter_by(name="default").one().shared = True
    s.add_all([Project(name="a", quotas={"vms": 2, "memory": 1 << 30}), Project(name="b")])
    s.flush()
    s.add(Network(name="bnet", project="b", bridge="corralb", subnet="10.211.0.0/24",
                  gateway="10.211.0.1", dhcp_start="10.211.0.128", dhcp_end="10.211.0.254"))
    s.add(Image(name="bimg", project="b", status="ready", virtual_size=64 << 20,
                file_size=1 << 20))
    s.flush()
    for name, project in (("a.web", "a"), ("b.web", "b")):
        s.add(Vm(name=name, image_id=image.id, host_id=host.id, cpus=1, memory_mib=512,
                 disk_bytes=64 << 20, state="stopped", desired_power="stopped",
                 project=project))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, agent=_agent, prepare=_projects)


_login = log_in


def _field_error(html: str, field: str) -> str:
    """The error shown next to a form field (its ``err-FIELD`` paragraph)."""
    found = re.search(rf'id="err-{field}" role="alert">([^<]*)<', html)
    assert found, f"no error next to {field}: " + html[html.find("<form"):][:1500]
    return found.group(1)


# -- the create form ------------------------------------------------------------------------

def test_the_create_form_offers_the_projects_images_networks_and_quota_use(
        ctx: EngineContext) -> None:
    b, _ = _login(ctx, "ann", "user", project="a")
    page = b.get("/vms/new")
    assert page.status_code == 200
    assert '<option selected>a</option>' in page.text  # its only project
    assert 'value="tiny"' in page.text and "bimg" not in page.text  # b's image is not offered
    assert "<option selected>default</option>" in page.text and "bnet" not in page.text
    assert "Quota of project a" in page.text
    assert "1 of 2" in page.text  # VMs: a.web of 2
    assert json.loads(re.search(r"data-quota='([^']+)'", page.text).group(1))["vms"] == [1, 2]  # type: ignore[union-attr]


def test_a_create_past_the_quota_is_refused_next_to_the_field(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann", "user", project="a")
    form = {"csrf": csrf, "project": "a", "name": "big", "source": "tiny", "cpus": "1",
            "memory": "1G", "disk": "", "network": "default", "start": "on"}
    resp = b.post("/vms/new", data=form)
    assert resp.status_code == 422
    error = _field_error(resp.text, "memory")
    assert "quota of 1.0 GiB" in error and "512 MiB used" in error
    assert 'value="big"' in resp.text  # what was typed stays
    with ctx.db.session() as s:
        assert s.query(Vm).filter_by(name="a.big").count() == 0


def test_bad_input_is_shown_next_to_its_field_never_a_500(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann")
    base = {"csrf": csrf, "project": "default", "name": "ok", "source": "tiny", "cpus": "1",
            "memory": "256M", "disk": "", "network": "default"}
    cases = [({"memory": "lots"}, "memory"), ({"cpus": "many"}, "cpus"),
             ({"cpus": "999"}, "cpus"), ({"name": "Bad Name!"}, "name"),
             ({"source": ""}, "source"), ({"source": "nope"}, "source"),
             ({"network": "nowhere"}, "network"), ({"name": "a.web"}, "name"),
             ({"disk": "1M"}, "disk"), ({"ssh_key": "not a key"}, "ssh_key"),
             ({"project": "nowhere"}, "project"), ({"source": "bimg"}, "source")]
    for change, field in cases:
        resp = b.post("/vms/new", data={**base, **change})
        assert 400 <= resp.status_code < 500, (change, resp.status_code, resp.text[:300])
        assert _field_error(resp.text, field), change


def test_a_project_user_may_not_create_in_another_project(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann", "user", project="a")
    resp = b.post("/vms/new", data={"csrf": csrf, "project": "b", "name": "x",
                                    "source": "tiny", "cpus": "1", "memory": "64M"})
    assert resp.status_code == 422
    assert "may not create VMs in project b" in _field_error(resp.text, "project")
    viewer, vcsrf = _login(ctx, "vic", "viewer")
    assert viewer.get("/vms/new").status_code == 403
    assert viewer.post("/vms/new", data={"csrf": vcsrf}).status_code == 403


def test_a_create_sends_the_forms_request_and_opens_the_vms_page(
        ctx: EngineContext, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[VmCreate, str]] = []
    monkeypatch.setattr(vm_service, "create", lambda _ctx, req, project: asked.append(
        (req, project)))
    b, csrf = _login(ctx, "ann", "user", project="a")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq2 me@h"
    resp = b.post("/vms/new", data={"csrf": csrf, "project": "a", "name": "new1",
                                    "source": "tiny", "cpus": "2", "memory": "128M",
                                    "disk": "1G", "network": "default", "user": "ops",
                                    "ssh_key": key, "start": "on"},
                  follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/vms/a.new1"
    [(req, project)] = asked
    assert project == "a"
    assert (req.name, req.image, req.cpus, req.memory_mib, req.disk_bytes, req.network,
            req.start) == ("new1", "tiny", 2, 128, 1 << 30, "default", True)
    assert req.cloud_init is not None and req.cloud_init.user == "ops"
    assert req.cloud_init.ssh_authorized_keys == [key]


def test_a_create_runs_as_an_operation(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann", "user", project="a")
    resp = b.post("/vms/new", data={"csrf": csrf, "project": "a", "name": "new2",
                                    "source": "tiny", "cpus": "1", "memory": "128M",
                                    "network": "default"}, follow_redirects=False)
    assert resp.status_code == 303
    ops = ctx.ops.listing(limit=10, projects=["a"], engine_wide=False)
    assert [op.type for op in ops if "a.new2" in op.resources.get("vms", [])] == ["vm.create"]


# -- snapshots ------------------------------------------------------------------------------

def test_snapshots_show_as_a_tree_with_their_actions(ctx: EngineContext) -> None:
    b, _ = _login(ctx, "ann", "user", project="a")
    page = b.get("/vms/a.web")
    assert page.status_code == 200
    order = re.findall(r'data-snapshot="([^"]+)"', page.text)
    assert order == ["base", "patched", "current", "other"]  # children under their parent
    depths = dict(re.findall(r'<tr data-snapshot="([^"]+)">\s*<td data-label="Name">'
                             r'<span class="tree" style="--depth: (\d)', page.text))
    assert depths == {"base": "0", "patched": "1", "current": "2", "other": "1"}
    assert "Revert VM web to snapshot patched?" in page.text
    assert "Delete snapshot other of VM web?" in page.text
    assert 'name="name"' in page.text and "Take snapshot" in page.text
    assert b.get("/vms/a.web/snapshots").status_code == 200


def test_snapshot_actions_follow_the_role_and_the_project(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann", "user", project="a")
    resp = b.post("/vms/a.web/snapshots/patched/revert", data={"csrf": csrf},
                  headers={"hx-request": "true"})
    assert resp.status_code == 200 and "vm.snapshot.revert" in resp.text
    resp = b.post("/vms/a.web/snapshots", data={"csrf": csrf, "name": "Bad Name"})
    assert resp.status_code == 422 and "snapshot name" in resp.text
    assert b.get("/vms/b.web/snapshots").status_code == 404  # another project's VM
    assert b.post("/vms/b.web/snapshots/base/delete", data={"csrf": csrf}).status_code == 404
    viewer, vcsrf = _login(ctx, "vic", "viewer", project="a")
    page = viewer.get("/vms/a.web")
    assert "Take snapshot" not in page.text and "/revert" not in page.text
    assert viewer.post("/vms/a.web/snapshots/base/revert",
                       data={"csrf": vcsrf}).status_code == 403


def test_delete_is_offered_on_a_stopped_vm_with_a_confirmation(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann", "user", project="a")
    page = b.get("/vms/a.web")
    assert 'data-confirm="Delete VM web?' in page.text
    resp = b.post("/vms/a.web/delete", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/vms"
    assert b.post("/vms/b.web/delete", data={"csrf": csrf}).status_code == 404


# -- admin pages ----------------------------------------------------------------------------

ADMIN_PAGES = ["/hosts", "/hosts/h1", "/networks", "/networks/default", "/networks/bnet",
               "/security-groups", "/pools", "/images", "/images/tiny", "/images/bimg",
               "/projects", "/projects/a", "/users", "/roles", "/audit",
               "/audit?action=login&user=root"]


def test_every_admin_page_answers_the_admin(ctx: EngineContext) -> None:
    b, _ = _login(ctx, "root")
    for path in ADMIN_PAGES:
        resp = b.get(path)
        assert resp.status_code == 200, (path, resp.text[:500])
        assert "<h1>" in resp.text
    hosts = b.get("/hosts").text
    assert 'href="/hosts/h1"' in hosts
    host = b.get("/hosts/h1").text
    assert 'href="/vms/a.web"' in host and 'href="/vms/b.web"' in host and "Maintenance" in host
    assert 'data-confirm="Put host h1 in maintenance?' in host
    assert 'href="/networks/bnet"' in b.get("/networks").text
    assert "Quotas" in b.get("/projects/a").text and "1 of 2" in b.get("/projects/a").text
    assert ">login<" in b.get("/audit?action=login").text
    assert b.get("/pools/none").status_code == 404
    assert b.get("/hosts/none").status_code == 404


def test_a_project_user_sees_only_what_its_role_allows(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann", "user", project="a")
    for path in ("/users", "/roles", "/audit"):
        assert b.get(path).status_code == 403, path
    for path in ("/networks/bnet", "/images/bimg", "/projects/b"):
        assert b.get(path).status_code == 404, path
    assert 'href="/networks/bnet"' not in b.get("/networks").text
    assert 'href="/images/bimg"' not in b.get("/images").text
    projects = b.get("/projects").text
    assert 'href="/projects/a"' in projects and 'href="/projects/b"' not in projects
    assert b.post("/hosts/h1/maintenance", data={"csrf": csrf}).status_code == 403
    assert b.post("/users", data={"csrf": csrf, "name": "x"}).status_code == 403
    nav = b.get("/").text
    assert 'href="/audit"' not in nav and 'href="/networks"' in nav


def test_user_create_errors_are_next_to_the_field(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "root")
    resp = b.post("/users", data={"csrf": csrf, "name": "bob", "role": "user",
                                  "password": "short"})
    assert resp.status_code == 422 and _field_error(resp.text, "u-password")
    resp = b.post("/users", data={"csrf": csrf, "name": "root", "role": "user",
                                  "password": PASSWORD})
    assert resp.status_code == 409 and "exists" in _field_error(resp.text, "u-name")
    resp = b.post("/users", data={"csrf": csrf, "name": "bob", "role": "king",
                                  "password": PASSWORD})
    assert resp.status_code == 422 and _field_error(resp.text, "u-role")
    resp = b.post("/users", data={"csrf": csrf, "name": "bob", "role": "viewer",
                                  "password": PASSWORD}, follow_redirects=False)
    assert resp.status_code == 303
    assert users.get(ctx, "bob").role == "viewer"
    listed = b.get("/users").text
    assert 'data-confirm="Delete user bob? Its sessions and tokens end."' in listed
    assert 'aria-label="Delete root"' not in listed  # not oneself
    assert b.post("/users/bob/delete", data={"csrf": csrf}).status_code == 200
    assert "bob" not in [u.name for u in users.list_users(ctx)]


def test_the_vm_list_sorts_by_column(ctx: EngineContext) -> None:
    b, _ = _login(ctx, "root")
    names = re.compile(r'class="vm-name">([^<]+)<')
    assert names.findall(b.get("/vms").text) == ["web", "web"]  # a.web, b.web: by project
    page = b.get("/vms?sort=-project")
    assert re.findall(r'href="/vms/([^"]+)" class="vm-name"', page.text) == ["b.web", "a.web"]
    assert 'aria-sort="descending"' in page.text
    assert b.get("/vms?sort=bogus").status_code == 200  # an unknown column: the default


def test_bulk_start_starts_the_ticked_vms_of_the_callers_projects(
        ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann", "user", project="a")
    assert 'form="bulk" aria-label="Select web"' in b.get("/vms").text
    resp = b.post("/vms/bulk", data={"csrf": csrf, "action": "start", "vm": ["a.web"]},
                  follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/vms"
    ops = ctx.ops.listing(limit=10, projects=["a"], engine_wide=False)
    assert [op.type for op in ops] == ["vm.start"]
    assert b.post("/vms/bulk", data={"csrf": csrf, "action": "start",
                                     "vm": ["a.web", "b.web"]}).status_code == 404
    assert b.post("/vms/bulk", data={"csrf": csrf, "action": "stop",
                                     "vm": ["a.web"]}).status_code == 409  # not running
    assert b.post("/vms/bulk", data={"csrf": csrf, "action": "explode",
                                     "vm": ["a.web"]}).status_code == 422
    assert b.post("/vms/bulk", data={"csrf": csrf, "action": "start"}).status_code == 422


def test_admin_actions_start_their_operations_or_refuse(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "root")
    resp = b.post("/hosts/h1/maintenance", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 409  # its VMs have nowhere to go: said on the page
    assert "cannot move off it" in resp.text and "a.web" in resp.text
    assert b.post("/hosts/none/activate", data={"csrf": csrf}).status_code == 404
    assert b.post("/images/tiny/delete", data={"csrf": csrf}).status_code == 409  # VMs use it
    ann, acsrf = _login(ctx, "ann", "user", project="a")
    assert ann.post("/networks/default/delete", data={"csrf": acsrf}).status_code == 403
    ops, ocsrf = _login(ctx, "otto", "operator", project="a")  # network.delete in a only
    assert ops.post("/networks/bnet/delete", data={"csrf": ocsrf}).status_code == 404
    assert ops.post("/networks/default/delete", data={"csrf": ocsrf}).status_code == 403
