"""Projects through the API: two projects may each have a VM ``web`` (the hosts know them by
their full names); a user of project A can neither see, start, console into nor delete a VM
of project B (404, as if there were none), nor use B's network; a viewer's token cannot
create; a token bound to a project acts there only; quotas refuse the VM that would pass
them, naming the quota, and accept it after another is deleted — also under N concurrent
creates; events and operations are filtered by what the reader may see."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from pg_server import PgServer, running_postgres
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Operation, Project, RoleAssignment, User, Vm
from corral.engine.services import passwords

PASSWORD = "correct horse battery"


class Agent:
    """The host's agent: every domain call done, and noted (method, path); snapshots kept."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.snapshots: dict[str, dict[str, dict[str, object]]] = {}

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.calls.append((req.method, req.url.path))
        if req.url.path == "/v1/host":
            return httpx.Response(200, json={
                "hostname": "h1", "agent_version": "test", "virt_type": "qemu",
                "libvirt_version": "9.0.0", "storage_dir": "/s", "console_dir": "/c",
                "storage_free": 1 << 40, "memory_mib": 4096, "cpus": 2})
        if "/snapshots" in req.url.path:  # kept per domain: listed, taken, deleted
            domain, _, snap = req.url.path.removeprefix("/v1/domains/").partition("/snapshots")
            mine = self.snapshots.setdefault(domain, {})
            if req.method == "GET":
                return httpx.Response(200, json=list(mine.values()))
            if req.method == "DELETE":
                mine.pop(snap.strip("/"), None)
                return httpx.Response(200, json={"deleted": True})
            name = json.loads(req.content)["name"]
            mine[name] = {"name": name, "created_at": "2026-12-04T00:00:00Z",
                          "state": "stopped", "memory": False, "current": True}
            return httpx.Response(200, json=mine[name])
        if req.url.path == "/v1/images/tiny/files":  # the host holds the image
            return httpx.Response(200, json={"files": [
                {"kind": "qcow2", "size": 1 << 20, "sha256": None}]})
        m = req.url.path.removeprefix("/v1/domains/").split("/")
        body = json.loads(req.content) if req.content else {}
        return httpx.Response(200, json={"name": m[0], "uuid": "u", "state": "stopped",
                                         "path": "/x", "size": 1, "deleted": True, "created": True,
                                         "tap": req.url.path.split("/")[-1], "id": 1, **body})


@pytest.fixture()
def agent() -> Agent:
    return Agent()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture()
def ctx(tmp_path: Path, agent: Agent, request: pytest.FixtureRequest) -> Iterator[EngineContext]:
    """Projects a and b; alice has role ``user`` on a, bob on b, vic ``viewer`` on a; each
    has no role of its own (``none``). On SQLite, or on PostgreSQL where a test asks with
    ``@pytest.mark.parametrize("ctx", ["sqlite", "postgresql"], indirect=True)``."""
    cleanup = ExitStack()
    db_url = ""  # the engine's SQLite file
    if getattr(request, "param", "sqlite") == "postgresql":
        db_url = cleanup.enter_context(request.getfixturevalue("postgres").database())
    ctx = build_context(EngineSettings(data_dir=tmp_path, db_url=db_url, agent_reconnect_s=0))
    cleanup.callback(ctx.db.engine.dispose)
    cleanup.callback(ctx.ops.shutdown, wait=True)  # executors end before the database goes
    ctx.agent_transport = httpx.MockTransport(agent)
    pw = passwords.hash_password(PASSWORD)
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path / "storage"), str(tmp_path))
        host.facts = {**host.facts, "memory_mib": 64 << 10, "cpus": 64}
        s.add_all([Project(name="a"), Project(name="b")])
        s.flush()
        s.add(Network(name="b-net", bridge="corralb", subnet="10.211.0.0/24",
                      gateway="10.211.0.1", dhcp_start="10.211.0.128",
                      dhcp_end="10.211.0.254", project="b"))
        for user, role, project in (("alice", "user", "a"), ("bob", "user", "b"),
                                    ("vic", "viewer", "a")):
            s.add(User(name=user, role="none", password_hash=pw))
            s.add(RoleAssignment(subject_kind="user", subject=user, role=role,
                                 project=project))
        s.query(Network).filter_by(name="default").update({"shared": True})
        s.query(Image).filter_by(name="tiny").update({"shared": True})
    try:
        yield ctx
    finally:
        ctx.ops.shutdown()
        cleanup.close()


def login(ctx: EngineContext, name: str) -> TestClient:
    resp = TestClient(create_app(ctx)).post("/api/v1/login",
                                            json={"username": name, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return TestClient(create_app(ctx), headers={"Authorization": f"Bearer {resp.json()['token']}"})


def create(client: TestClient, project: str, name: str = "web", **more: Any) -> httpx.Response:
    body = {"name": name, "image": "tiny", "cpus": 1, "memory": "128M", "start": False, **more}
    return client.post(f"/api/v1/vms?project={project}", json=body)


def settle(ctx: EngineContext, client: TestClient, made: httpx.Response, project: str) -> None:
    assert made.status_code == 202, made.text
    done = client.get(f"/api/v1/operations/{made.json()['id']}/wait?timeout=30"
                      f"&project={project}")
    assert done.json()["status"] == "success", done.text


def test_two_projects_each_have_a_vm_web(ctx: EngineContext, agent: Agent) -> None:
    alice, bob = login(ctx, "alice"), login(ctx, "bob")
    settle(ctx, alice, create(alice, "a"), "a")
    settle(ctx, bob, create(bob, "b", network="b-net"), "b")
    with ctx.db.session() as s:
        rows = {(v.project, v.name) for v in s.query(Vm)}
    assert rows == {("a", "a.web"), ("b", "b.web")}  # what the hosts call them
    defined = {p for m, p in agent.calls if m == "PUT" and p.startswith("/v1/domains/")}
    assert "/v1/domains/a.web" in defined and "/v1/domains/b.web" in defined
    shown = alice.get("/api/v1/vms/web?project=a").json()
    assert (shown["name"], shown["project"]) == ("web", "a")
    assert [v["name"] for v in alice.get("/api/v1/vms?project=a").json()] == ["web"]
    # the same name twice in one project is still a 409
    assert create(alice, "a").status_code == 409


def test_a_user_of_one_project_cannot_touch_anothers_vm(ctx: EngineContext) -> None:
    alice, bob = login(ctx, "alice"), login(ctx, "bob")
    settle(ctx, bob, create(bob, "b", network="b-net"), "b")
    # b does not exist for alice: every route answers 404, not 403 (no existence leak)
    for method, path in (("GET", "/api/v1/vms/web"), ("GET", "/api/v1/vms"),
                         ("PUT", "/api/v1/vms/web/state"), ("DELETE", "/api/v1/vms/web"),
                         ("GET", "/api/v1/vms/web/console-log"),
                         ("POST", "/api/v1/vms/web/console-ticket")):
        body = {"action": "start"} if method == "PUT" else None
        resp = alice.request(method, path + "?project=b", json=body)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["error"]["field"] == "project"
    # in her own project the VM is simply not there
    assert alice.get("/api/v1/vms/web?project=a").status_code == 404
    assert alice.get("/api/v1/vms?project=a").json() == []
    with pytest.raises(WebSocketDisconnect) as closed, \
            alice.websocket_connect("/api/v1/vms/web/console?project=b"):
        pass
    assert closed.value.code == 4404  # the console of b's VM: as if there were none
    # nor can she use b's network for a VM of hers
    refused = create(alice, "a", network="b-net")
    assert refused.status_code == 404 and refused.json()["error"]["field"] == "network"
    # the shared network is there for everyone
    assert "default" in [n["name"] for n in alice.get("/api/v1/networks?project=a").json()]
    assert "b-net" not in [n["name"] for n in alice.get("/api/v1/networks?project=a").json()]


def test_a_viewer_reads_its_project_and_cannot_create(ctx: EngineContext) -> None:
    alice, vic = login(ctx, "alice"), login(ctx, "vic")
    settle(ctx, alice, create(alice, "a"), "a")
    assert [v["name"] for v in vic.get("/api/v1/vms?project=a").json()] == ["web"]
    refused = create(vic, "a", name="more")
    assert refused.status_code == 403 and refused.json()["error"]["details"]["permission"] == "vm.create"
    assert vic.get("/api/v1/vms?project=b").status_code == 404


def test_a_token_bound_to_a_project_acts_there_only(ctx: EngineContext) -> None:
    admin = admin_client(ctx)
    admin.post("/api/v1/users", json={"name": "ops", "role": "operator", "password": PASSWORD})
    ops = login(ctx, "ops")
    made = ops.post("/api/v1/tokens", json={"name": "ci", "project": "a"})
    assert made.status_code == 201, made.text
    ci = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {made.json()['token']}"})
    assert ci.get("/api/v1/whoami").json()["project"] == "a"
    settle(ctx, ci, create(ci, "a"), "a")
    assert ci.get("/api/v1/vms").json()[0]["project"] == "a"  # its project is the default
    assert ci.get("/api/v1/vms?project=b").status_code == 404
    assert create(ci, "b").status_code == 404


def test_a_quota_refuses_the_vm_that_passes_it_and_names_it(ctx: EngineContext) -> None:
    alice = login(ctx, "alice")
    with ctx.db.session() as s:
        s.query(Project).filter_by(name="a").update({"quotas": {"vms": 2, "vcpus": 3}})
    settle(ctx, alice, create(alice, "a", name="one", cpus=2), "a")
    refused = create(alice, "a", name="two", cpus=2)
    assert refused.status_code == 409, refused.text
    err = refused.json()["error"]
    assert err["code"] == "quota_exceeded"
    assert err["details"] == {"quota": "vcpus", "limit": 3, "use": 2, "asked": 2}
    assert "quota vcpus is 3, 2 used" in err["message"]
    settle(ctx, alice, create(alice, "a", name="two", cpus=1), "a")
    assert create(alice, "a", name="three", cpus=1).json()["error"]["details"]["quota"] == "vms"
    settle(ctx, alice, alice.delete("/api/v1/vms/one?project=a"), "a")
    settle(ctx, alice, create(alice, "a", name="three", cpus=1), "a")
    # another project's quota is its own
    bob = login(ctx, "bob")
    settle(ctx, bob, create(bob, "b", network="b-net", cpus=4), "b")


@pytest.mark.parametrize("ctx", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_creates_never_pass_a_quota(ctx: EngineContext) -> None:
    alice = login(ctx, "alice")
    with ctx.db.session() as s:
        s.query(Project).filter_by(name="a").update({"quotas": {"vms": 3}})
    answers: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        resp = create(alice, "a", name=f"vm{i}")
        with lock:
            answers.append(resp.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(answers) == [202] * 3 + [409] * 5
    with ctx.db.session() as s:
        assert s.query(Vm).filter_by(project="a").count() == 3


def test_operations_and_events_are_those_the_reader_may_see(ctx: EngineContext) -> None:
    alice, bob = login(ctx, "alice"), login(ctx, "bob")
    settle(ctx, bob, create(bob, "b", network="b-net"), "b")
    settle(ctx, alice, create(alice, "a"), "a")
    mine = alice.get("/api/v1/operations?project=a").json()
    assert mine and {o["project"] for o in mine} == {"a"}
    everywhere = alice.get("/api/v1/operations?project=*").json()
    assert {o["project"] for o in everywhere} == {"a"}
    with ctx.db.session() as s:
        theirs = s.query(Operation).filter_by(project="b").first()
        assert theirs is not None
        their_id = theirs.id
    assert alice.get(f"/api/v1/operations/{their_id}?project=a").status_code == 404
    assert alice.delete(f"/api/v1/operations/{their_id}?project=a").status_code == 404
    # events: the bus tags each with its project; the stream's filter is what alice may read
    seen = {e.project for e in ctx.bus.recent}
    assert {"a", "b"} <= seen
    admin = admin_client(ctx)
    assert {o["project"] for o in admin.get("/api/v1/operations?project=*").json()} >= {"a", "b"}


def test_an_admin_shares_an_image_with_every_project(ctx: EngineContext) -> None:
    admin, alice = admin_client(ctx), login(ctx, "alice")
    with ctx.db.session() as s:
        s.query(Image).filter_by(name="tiny").update({"shared": False})
    assert create(alice, "a").json()["error"]["field"] == "image"
    assert "tiny" not in [i["name"] for i in alice.get("/api/v1/images?project=a").json()]
    refused = alice.put("/api/v1/images/tiny/shared?project=a", json={"shared": True})
    assert refused.status_code == 403  # sharing is an admin's
    assert admin.put("/api/v1/images/tiny/shared", json={"shared": True}).json() == {
        "shared": True}
    listed = {i["name"]: i for i in alice.get("/api/v1/images?project=a").json()}
    assert listed["tiny"]["shared"] and listed["tiny"]["project"] == "default"
    settle(ctx, alice, create(alice, "a"), "a")
    # shared to use, not to change: an operator of project a deleting it does not find it
    with ctx.db.session() as s:
        s.add(User(name="ola", role="none", password_hash=passwords.hash_password(PASSWORD)))
        s.add(RoleAssignment(subject_kind="user", subject="ola", role="operator", project="a"))
    assert login(ctx, "ola").delete("/api/v1/images/tiny?project=a").status_code == 404


def test_the_snapshot_quota_counts_what_corral_made(ctx: EngineContext) -> None:
    alice = login(ctx, "alice")
    settle(ctx, alice, create(alice, "a"), "a")
    admin = admin_client(ctx)  # as `corral project quota set a --snapshots 1`
    assert admin.put("/api/v1/projects/a/quotas", json={"snapshots": 1}).status_code == 200
    snap = "/api/v1/vms/web/snapshots?project=a"
    settle(ctx, alice, alice.post(snap, json={"name": "one"}), "a")
    refused = alice.post(snap, json={"name": "two"})
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {
        "quota": "snapshots", "limit": 1, "use": 1, "asked": 1}
    settle(ctx, alice, alice.delete("/api/v1/vms/web/snapshots/one?project=a"), "a")
    settle(ctx, alice, alice.post(snap, json={"name": "two"}), "a")
