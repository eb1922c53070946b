"""The storage and image admin pages' actions without a browser (engine/ui/
admin_storage_forms.py): add and delete a pool, create and delete a volume, import an
image, make a template (each an operation the page then shows), share an image; refusals
by role (403), for another project's object (404), bad input next to its field with what
was typed kept, a pool in use refused with a clear message. The host is a stand-in agent
(httpx.MockTransport)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from api_server import QuickHost
from engine_seed import engine_context
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.orm import Session
from web_ui_login import log_in

from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Project, StoragePool, Vm, Volume
from corral.engine.routes.deps import declared_permissions

GIB = 1 << 30
SENT: list[tuple[str, str]] = []  # what the stand-in host was asked (method, path)
# A host that says yes (a pool's dry run and stats: 1 TiB free; no volume of that name
# yet); its jobs fail at once, so operations end quickly. Closed: operations wait.
HOST = QuickHost()


def _agent(request: httpx.Request) -> httpx.Response:
    SENT.append((request.method, request.url.path))
    return HOST(request)


def _storage(s: Session, host: Host) -> None:
    """Projects a (disk quota 20 GiB) and b; pools ``default`` and ``fast`` (dir, on h1)
    and ``empty``; in ``fast`` volumes adata (a), bdata (b) and attached (a, on VM a.web);
    stopped VMs a.web and b.web; the image bimg of b (tiny is shared)."""
    s.add_all([Project(name="a", quotas={"disk": 20 * GIB}), Project(name="b")])
    s.flush()
    pools = {n: StoragePool(name=n, type="dir", path=f"/srv/pools/{n}", host_id=host.id,
                            status="ready") for n in ("default", "fast", "empty")}
    s.add_all(pools.values())
    image = s.query(Image).filter_by(name="tiny").one()
    image.shared = True
    vms = {p: Vm(name=f"{p}.web", image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="stopped", desired_power="stopped", project=p)
           for p in ("a", "b")}
    s.add_all(vms.values())
    s.add(Image(name="bimg", project="b", status="ready", virtual_size=64 << 20,
                file_size=1 << 20))
    s.flush()
    fast = pools["fast"].id
    s.add_all([Volume(pool_id=fast, name="adata", format="qcow2", size=GIB, status="ready",
                      project="a"),
               Volume(pool_id=fast, name="bdata", format="qcow2", size=GIB, status="ready",
                      project="b"),
               Volume(pool_id=fast, name="attached", format="qcow2", size=GIB,
                      status="ready", project="a", vm_id=vms["a"].id, bus="virtio",
                      target="vdb")])


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    SENT.clear()
    HOST.open()
    yield from engine_context(tmp_path, agent=_agent, prepare=_storage)
    HOST.open()


@contextmanager
def held() -> Iterator[None]:
    """The host keeps operations waiting (at most 30 s): what they start stays as it is."""
    HOST.close()
    try:
        yield
    finally:
        HOST.open()


def _field_error(html: str, field: str) -> str:
    """The error shown next to a form field (its ``err-FIELD`` paragraph)."""
    found = re.search(rf'id="err-{field}" role="alert">([^<]*)<', html)
    assert found, f"no error next to {field}: " + html[html.find("<form"):][:2000]
    return found.group(1)


def _op_of(resp: httpx.Response, page: str) -> str:
    """The operation a form started: the browser goes back to ``page?op=ID``."""
    assert resp.status_code == 303, resp.text[:1000]
    location = resp.headers["location"]
    assert location.startswith(f"{page}?op="), location
    return location.split("?op=", 1)[1]


def _volume(ctx: EngineContext, name: str) -> Volume | None:
    with ctx.db.session() as s:
        row = s.query(Volume).filter_by(name=name).one_or_none()
        if row is not None:
            s.expunge(row)
        return row


# -- pools ----------------------------------------------------------------------------------

def test_the_pool_list_offers_add_pool_and_delete_with_a_confirmation(
        ctx: EngineContext) -> None:
    b, _ = log_in(ctx, "root")
    page = b.get("/pools").text
    assert 'action="/pools"' in page and "Add pool" in page
    for field in ("pl-name", "pl-type", "pl-path", "pl-ceph_pool", "pl-ceph_conf"):
        assert f'<label for="{field}">' in page, field
    assert "<summary>More options (Ceph RBD pools)</summary>" in page
    assert '<details class="more" >' in page  # folded while nothing in it was typed
    assert 'data-confirm="Delete storage pool fast? Refused while it holds volumes' in page
    assert 'aria-label="Delete empty"' in page
    assert 'aria-label="Delete default"' not in page  # the API never deletes it


def test_adding_a_pool_starts_its_operation_which_the_list_shows(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    resp = b.post("/pools", data={"csrf": csrf, "name": "fresh", "type": "dir", "path": "",
                                  "ceph_conf": "", "ceph_pool": ""}, follow_redirects=False)
    op_id = _op_of(resp, "/pools")
    assert ("POST", "/v1/pools/fresh/check") in SENT  # the host's dry run came first
    page = b.get(f"/pools?op={op_id}").text
    assert f'id="op-{op_id}"' in page and "pool.create" in page  # its progress
    assert 'href="/pools/fresh"' in page  # the new pool in the list
    assert ctx.ops.wait(op_id, timeout=30).status.value == "success"
    with ctx.db.session() as s:
        row = s.query(StoragePool).filter_by(name="fresh").one()
        assert (row.type, row.status) == ("dir", "ready")
        assert row.path is not None and row.path.endswith("/pools/fresh")


def test_pool_form_errors_are_next_to_their_field_with_what_was_typed(
        ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    base = {"csrf": csrf, "name": "new1", "type": "dir", "path": "", "ceph_conf": "",
            "ceph_pool": ""}
    cases = [({"name": "Bad Name"}, "pl-name", 422), ({"name": "fast"}, "pl-name", 409),
             ({"type": "shared"}, "pl-path", 422), ({"path": "relative/dir"}, "pl-path", 422),
             ({"path": "/srv/pools/fast"}, "pl-path", 409),
             ({"type": "rbd"}, "pl-ceph_pool", 422),
             ({"type": "rbd", "ceph_pool": "bad pool!"}, "pl-ceph_pool", 422),
             ({"type": "nfs"}, "pl-type", 422)]
    for change, field, status in cases:
        resp = b.post("/pools", data={**base, **change})
        assert resp.status_code == status, (change, resp.status_code, resp.text[:300])
        assert _field_error(resp.text, field), change
        for name, value in change.items():
            if name != "type":
                assert f'value="{value}"' in resp.text, (change, name)  # kept
    resp = b.post("/pools", data={**base, "type": "rbd", "ceph_pool": "bad pool!"})
    assert '<details class="more" open>' in resp.text  # the error is not hidden
    assert "fast" in _field_error(
        b.post("/pools", data={**base, "name": "fast"}).text, "pl-name")
    with ctx.db.session() as s:
        assert s.query(StoragePool).filter_by(name="new1").count() == 0


def test_deleting_a_pool_in_use_is_refused_with_a_clear_message(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    resp = b.post("/pools/fast/delete", data={"csrf": csrf})
    assert resp.status_code == 409
    alert = re.search(r'<p class="alert" role="alert">([^<]*)<', resp.text)
    assert alert, resp.text[:1000]
    assert alert.group(1).startswith("Storage pool fast was not deleted: storage pool fast "
                                     "is in use: it holds 3 volume(s)")
    assert 'href="/pools/fast"' in resp.text  # the list, as it was
    assert b.post("/pools/default/delete", data={"csrf": csrf}).status_code == 409
    assert b.post("/pools/none/delete", data={"csrf": csrf}).status_code == 404
    op_id = _op_of(b.post("/pools/empty/delete", data={"csrf": csrf},
                          follow_redirects=False), "/pools")
    assert ctx.ops.get(op_id).type == "pool.delete"


def test_pool_actions_need_their_permission(ctx: EngineContext) -> None:
    ann, csrf = log_in(ctx, "ann", "user", project="a")
    page = ann.get("/pools")
    assert page.status_code == 200  # pools are read by every role
    assert 'action="/pools"' not in page.text and "/delete" not in page.text
    assert ann.post("/pools", data={"csrf": csrf, "name": "mine"}).status_code == 403
    assert ann.post("/pools/empty/delete", data={"csrf": csrf}).status_code == 403
    with ctx.db.session() as s:
        assert s.query(StoragePool).filter_by(name="empty").one().status == "ready"


# -- volumes --------------------------------------------------------------------------------

def test_a_pool_page_offers_create_volume_in_the_callers_projects(ctx: EngineContext) -> None:
    ann, _ = log_in(ctx, "ann", "user", project="a")
    page = ann.get("/pools/fast").text
    assert 'action="/pools/fast/volumes"' in page
    for field in ("vol-name", "vol-size", "vol-format", "vol-project"):
        assert f'<label for="{field}">' in page, field
    projects = re.search(r'<select id="vol-project"[^>]*>(.*?)</select>', page, re.S)
    assert projects and re.findall(r"<option[^>]*>([^<]+)<", projects.group(1)) == ["a"]
    assert ">adata<" in page and ">bdata<" not in page  # b's volume is not listed
    assert 'data-confirm="Delete volume fast/adata? The data on it is lost."' in page
    assert 'aria-label="Delete attached"' not in page  # attached to a.web


def test_creating_a_volume_starts_its_operation_and_lists_it(ctx: EngineContext) -> None:
    ann, csrf = log_in(ctx, "ann", "user", project="a")
    with held():
        resp = ann.post("/pools/fast/volumes", data={"csrf": csrf, "name": "v1",
                                                     "size": "10G", "format": "raw",
                                                     "project": "a"}, follow_redirects=False)
        op_id = _op_of(resp, "/pools/fast")
        row = _volume(ctx, "v1")
        assert row is not None
        assert (row.project, row.size, row.format, row.status) == ("a", 10 * GIB, "raw",
                                                                   "creating")
        assert ctx.ops.get(op_id).type == "volume.create"
        page = ann.get(f"/pools/fast?op={op_id}").text
        assert ">v1<" in page and f'id="op-{op_id}"' in page and "<progress" in page


def test_volume_form_errors_are_next_to_their_field(ctx: EngineContext) -> None:
    ann, csrf = log_in(ctx, "ann", "user", project="a")
    base = {"csrf": csrf, "name": "v2", "size": "1G", "format": "", "project": "a"}
    cases = [({"name": "Bad Name"}, "vol-name", 422), ({"name": "adata"}, "vol-name", 409),
             ({"size": "lots"}, "vol-size", 422), ({"size": ""}, "vol-size", 422),
             ({"size": "30G"}, "vol-size", 409),  # past project a's disk quota
             ({"format": "vmdk"}, "vol-format", 422),
             ({"project": "b"}, "vol-project", 422), ({"project": ""}, "vol-project", 422)]
    for change, field, status in cases:
        resp = ann.post("/pools/fast/volumes", data={**base, **change})
        assert resp.status_code == status, (change, resp.status_code, resp.text[:300])
        assert _field_error(resp.text, field), change
        assert 'value="v2"' in resp.text or change.get("name")  # what was typed stays
    quota = ann.post("/pools/fast/volumes", data={**base, "size": "30G"}).text
    assert "quota" in _field_error(quota, "vol-size")
    assert "b" in _field_error(ann.post("/pools/fast/volumes",
                                        data={**base, "project": "b"}).text, "vol-project")
    assert _volume(ctx, "v2") is None
    assert ann.post("/pools/none/volumes", data=base).status_code == 404


def test_deleting_a_volume_follows_its_project_and_its_attachment(ctx: EngineContext) -> None:
    ann, csrf = log_in(ctx, "ann", "user", project="a")
    assert ann.post("/pools/fast/volumes/bdata/delete", data={"csrf": csrf}).status_code == 404
    refused = ann.post("/pools/fast/volumes/attached/delete", data={"csrf": csrf})
    assert refused.status_code == 409
    assert "Volume fast/attached was not deleted: volume fast/attached is in use: attached " \
           "to VM a.web" in refused.text
    op_id = _op_of(ann.post("/pools/fast/volumes/adata/delete", data={"csrf": csrf},
                            follow_redirects=False), "/pools/fast")
    assert ctx.ops.get(op_id).type == "volume.delete"
    # the volume's project's user follows the delete it started (the operation is a's)
    assert f'id="op-{op_id}"' in ann.get(f"/pools/fast?op={op_id}").text
    vic, vcsrf = log_in(ctx, "vic", "viewer", project="a")
    assert 'action="/pools/fast/volumes"' not in vic.get("/pools/fast").text
    assert vic.post("/pools/fast/volumes/attached/delete",
                    data={"csrf": vcsrf}).status_code == 403
    assert vic.post("/pools/fast/volumes", data={"csrf": vcsrf, "name": "x", "size": "1G",
                                                 "project": "a"}).status_code == 403
    bob, bcsrf = log_in(ctx, "bob", "user", project="b")
    assert bob.post("/pools/fast/volumes/attached/delete",
                    data={"csrf": bcsrf}).status_code == 404


# -- images and templates -------------------------------------------------------------------

URL = "http://192.0.2.10/images/deb.qcow2"  # TEST-NET-1: an address nothing answers


def test_importing_an_image_is_an_operation_the_images_page_shows(ctx: EngineContext) -> None:
    otto, csrf = log_in(ctx, "otto", "operator", project="a")
    page = otto.get("/images").text
    for field in ("i-name", "i-source", "i-project", "i-format", "i-checksum"):
        assert f'<label for="{field}">' in page, field
    resp = otto.post("/images", data={"csrf": csrf, "name": "deb", "source": URL,
                                      "project": "a", "format": "auto", "checksum": ""},
                     follow_redirects=False)
    op_id = _op_of(resp, "/images")
    op = ctx.ops.get(op_id)
    assert (op.type, op.project) == ("image.import", "a")
    shown = otto.get(f"/images?op={op_id}").text
    assert f'id="op-{op_id}"' in shown and "image.import" in shown
    ctx.ops.wait(op_id, timeout=30)  # the stand-in host cannot download: it fails
    failed = otto.get(f"/images?op={op_id}").text
    assert "data-done" in failed and "the stand-in host does no work" in failed
    assert otto.get(f"/operations/{op_id}").status_code == 200  # its fragment polls this


def test_image_import_errors_are_next_to_their_field(ctx: EngineContext) -> None:
    otto, csrf = log_in(ctx, "otto", "operator", project="a")
    base = {"csrf": csrf, "name": "deb", "source": URL, "project": "a", "format": "auto",
            "checksum": ""}
    cases = [({"name": "Bad Name"}, "i-name", 422), ({"name": "tiny"}, "i-name", 409),
             ({"source": "ftp://192.0.2.10/x"}, "i-source", 422),
             ({"source": "http://127.0.0.1/x.qcow2"}, "i-source", 422),
             ({"source": ""}, "i-source", 422),
             ({"checksum": "md5:abc"}, "i-checksum", 422), ({"format": "zip"}, "i-format", 422),
             ({"project": "b"}, "i-project", 422)]
    for change, field, status in cases:
        resp = otto.post("/images", data={**base, **change})
        assert resp.status_code == status, (change, resp.status_code, resp.text[:300])
        assert _field_error(resp.text, field), change
    kept = otto.post("/images", data={**base, "checksum": "md5:abc"}).text
    assert 'value="md5:abc"' in kept and f'value="{URL}"' in kept
    assert '<details class="more" open>' in kept
    with ctx.db.session() as s:
        assert s.query(Image).filter_by(name="deb").count() == 0


def test_image_import_needs_image_create(ctx: EngineContext) -> None:
    ann, csrf = log_in(ctx, "ann", "user", project="a")
    page = ann.get("/images").text
    assert 'action="/images"' not in page and 'action="/templates"' not in page
    assert ann.post("/images", data={"csrf": csrf, "name": "deb", "source": URL,
                                     "project": "a"}).status_code == 403
    assert ann.post("/templates", data={"csrf": csrf, "name": "g", "vm": "a.web"}
                    ).status_code == 403


def test_a_template_is_made_of_a_stopped_vm_of_the_callers_project(ctx: EngineContext) -> None:
    otto, csrf = log_in(ctx, "otto", "operator", project="a")
    page = otto.get("/images").text
    sources = re.search(r'<select id="t-vm"[^>]*>(.*?)</select>', page, re.S)
    assert sources and re.findall(r'value="([^"]+)"', sources.group(1)) == ["a.web"]
    with held():  # the operation waits for the host: its template row stays meanwhile
        resp = otto.post("/templates", data={"csrf": csrf, "vm": "a.web", "name": "golden"},
                         follow_redirects=False)
        op = ctx.ops.get(_op_of(resp, "/images"))
        assert op.type == "template.create" and op.resources["vms"] == ["a.web"]
        with ctx.db.session() as s:
            made = s.query(Image).filter_by(name="golden").one()
            assert (made.project, made.template_vm) == ("a", "a.web")
    other = otto.post("/templates", data={"csrf": csrf, "vm": "b.web", "name": "g2"})
    assert other.status_code == 404 and "not found" in _field_error(other.text, "t-vm")
    bad = otto.post("/templates", data={"csrf": csrf, "vm": "a.web", "name": "Bad Name"})
    assert bad.status_code == 422 and _field_error(bad.text, "t-name")
    assert 'value="Bad Name"' in bad.text


def test_each_action_declares_the_permission_of_its_api_route(ctx: EngineContext) -> None:
    declared = {str(rc.path): declared_permissions(rc.dependant)
                for rc in iter_route_contexts(create_app(ctx).routes)
                if isinstance(rc.original_route, APIRoute) and "POST" in (rc.methods or ())}
    assert {path: declared[path] for path in ACTIONS} == ACTIONS


ACTIONS = {"/pools": ["pool.create"], "/pools/{name}/delete": ["pool.delete"],
           "/pools/{name}/volumes": ["volume.create"],
           "/pools/{name}/volumes/{volume}/delete": ["volume.delete"],
           "/images": ["image.create"], "/templates": ["template.create"],
           "/images/{name}/share": ["project.update"],
           "/images/{name}/unshare": ["project.update"]}


def test_an_admin_shares_an_image_with_every_project_and_stops(ctx: EngineContext) -> None:
    root, csrf = log_in(ctx, "root")
    page = root.get("/images/bimg").text
    assert 'action="/images/bimg/share"' in page and "Share with every project" in page
    resp = root.post("/images/bimg/share", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/images/bimg"
    ann, acsrf = log_in(ctx, "ann", "user", project="a")
    assert 'href="/images/bimg"' in ann.get("/images").text  # b's image, shared now
    assert 'data-confirm="Stop sharing bimg with every project?' in root.get(
        "/images/bimg").text
    assert ann.post("/images/bimg/unshare", data={"csrf": acsrf}).status_code == 403
    assert root.post("/images/bimg/unshare", data={"csrf": csrf}).status_code == 200
    assert ann.get("/images/bimg").status_code == 404
    assert root.post("/images/none/share", data={"csrf": csrf}).status_code == 404
