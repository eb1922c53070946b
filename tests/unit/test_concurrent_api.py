"""Requests racing each other at the API edge: whatever the interleaving, one wins and every
other gets a 409 naming the conflict, never a 500; and no row is left in a transitional
state once the operations they started have ended.

The engine's real API is served by uvicorn (tests/unit/api_server.py), on SQLite and on
PostgreSQL (tests/unit/pg_server.py: the claims' PostgreSQL branches); the host is a
stand-in agent that answers at once (its jobs fail, so the operations' failure paths run
too). Each case fires ``N`` requests from ``N`` threads released together by a barrier.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import QuickHost, serving
from engine_seed import seed_node
from pg_server import PgServer, running_postgres

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import (
    Image,
    Network,
    Nic,
    Operation,
    SecurityGroup,
    StoragePool,
    Vm,
    Volume,
)
from corral.engine.services.auth import create_token

N = 12
# Rows in one of these states belong to an operation; none may stay once all have ended.
TRANSITIONAL = {"creating", "deleting", "importing", "attaching", "detaching", "resizing"}


@dataclass
class Api:
    url: str
    token: str
    ctx: EngineContext
    host: QuickHost

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})

    def race(self, calls: list[tuple[str, str, dict[str, Any] | None]]) -> list[httpx.Response]:
        """Every call at once (one thread each, released together), while the operations
        they start wait for the host; their answers."""
        self.host.close()
        try:
            return self._race(calls)
        finally:
            self.host.open()

    def _race(self, calls: list[tuple[str, str, dict[str, Any] | None]]) -> list[httpx.Response]:
        barrier = threading.Barrier(len(calls), timeout=30)
        out: list[httpx.Response | BaseException | None] = [None] * len(calls)

        def one(i: int, method: str, path: str, body: dict[str, Any] | None) -> None:
            with self.client() as c:
                barrier.wait()
                try:
                    out[i] = c.request(method, path, json=body)
                except BaseException as exc:  # reported below, with the others' answers
                    out[i] = exc

        threads = [threading.Thread(target=one, args=(i, *call)) for i, call in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a request did not come back in 60 s"
        failed = [o for o in out if not isinstance(o, httpx.Response)]
        assert not failed, f"requests failed without an answer: {failed}"
        return [o for o in out if isinstance(o, httpx.Response)]

    def settle(self) -> None:
        """Wait until every operation has ended (bounded)."""
        deadline = time.monotonic() + 60
        while True:
            with self.ctx.db.session() as s:
                active = s.query(Operation).filter(
                    Operation.status.in_(("pending", "running"))).count()
            if not active:
                return
            assert time.monotonic() < deadline, f"{active} operations still active after 60 s"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def api(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Api]:
    cleanup = ExitStack()
    db_url = ""  # the engine's SQLite file
    if request.param == "postgresql":
        db_url = cleanup.enter_context(request.getfixturevalue("postgres").database())
    # CPU overcommit 16: the N stopped VMs below take more vCPUs than the seed host's 2 x 4
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0,
                                       cpu_overcommit=16.0, db_url=db_url))
    cleanup.callback(ctx.db.engine.dispose)
    cleanup.callback(ctx.ops.shutdown, wait=True)  # executors end before the database goes
    host = QuickHost()
    ctx.agent_transport = httpx.MockTransport(host)
    with ctx.db.session() as s:
        row = seed_node(s, str(tmp_path), str(tmp_path))
        pool = StoragePool(name="data", type="dir", path=str(tmp_path / "data"),
                           host_id=row.id, status="ready")
        s.add(pool)
        s.flush()
        s.add(Volume(pool_id=pool.id, name="vol", format="qcow2", size=1 << 30, status="ready"))
        image = s.query(Image).filter_by(name="tiny").one()
        net = s.query(Network).filter_by(name="default").one()
        for i in range(N):  # stopped VMs to attach things to
            vm = Vm(name=f"vm{i}", image_id=image.id, host_id=row.id, cpus=1, memory_mib=64,
                    disk_bytes=64 << 20, state="stopped")
            s.add(vm)
            s.flush()
            s.add(Nic(vm_id=vm.id, network_id=net.id, mac=f"52:54:00:00:01:{i:02x}", idx=0))
    token = create_token(ctx, "admin")
    try:
        with serving(create_app(ctx)) as url:
            yield Api(url, token, ctx, host)
    finally:
        ctx.ops.shutdown()
        cleanup.close()


def assert_one_wins(answers: list[httpx.Response], ok: int) -> None:
    """One ``ok`` answer, every other a 409 (or, for a delete that came after the winner had
    finished, a 404) in corral's error shape with a message."""
    codes = Counter(r.status_code for r in answers)
    assert codes[ok] == 1 and codes[409] + codes[404] == len(answers) - 1, \
        f"{dict(codes)}: " + "; ".join(r.text[:200] for r in answers if r.status_code != 409)
    for r in answers:
        if r.status_code in (404, 409):
            error = r.json()["error"]
            assert error["code"] in ("conflict", "wrong_state", "not_found") and error["message"]


def same(method: str, path: str, body: dict[str, Any] | None = None
         ) -> Callable[[int], tuple[str, str, dict[str, Any] | None]]:
    return lambda _i: (method, path, body)


# (name, request i of N, status of the winner, rows that must exist once afterwards)
CASES: list[tuple[str, Callable[[int], tuple[str, str, dict[str, Any] | None]], int]] = [
    ("vm-name", same("POST", "/api/v1/vms", {"name": "web", "image": "tiny", "memory": "64M"}),
     202),
    ("security-group-name", same("POST", "/api/v1/security-groups", {"name": "web"}), 201),
    ("network-name", same("POST", "/api/v1/networks", {"name": "lan", "mode": "isolated"}),
     202),
    ("network-subnet", lambda i: ("POST", "/api/v1/networks",
                                  {"name": f"lan{i}", "subnet": "10.77.0.0/24"}), 202),
    ("network-vni", lambda i: ("POST", "/api/v1/networks",
                               {"name": f"ovl{i}", "overlay": "vxlan", "vni": 4242,
                                "mode": "isolated"}), 202),
    ("pool-name", same("POST", "/api/v1/storage/pools", {"name": "fast"}), 202),
    ("volume-name", same("POST", "/api/v1/storage/pools/data/volumes",
                         {"name": "v2", "size": "1G"}), 202),
    ("image-name", same("POST", "/api/v1/images",
                        {"name": "deb", "source": "http://192.0.2.10/deb.qcow2"}), 202),
    ("tiny-build-name", same("POST", "/api/v1/images/build-tiny", {"name": "tiny3"}), 202),
    ("nic-mac", lambda i: ("POST", f"/api/v1/vms/vm{i}/nics",
                           {"network": "default", "mac": "52:54:00:aa:bb:cc"}), 202),
    ("nic-static-ip", lambda i: ("POST", f"/api/v1/vms/vm{i}/nics",
                                 {"network": "default", "ip": "10.210.0.50"}), 202),
    ("volume-attach", lambda i: ("POST", f"/api/v1/vms/vm{i}/disks", {"volume": "data/vol"}),
     202),
    ("clone-name", lambda i: ("POST", f"/api/v1/vms/vm{i}/clone", {"name": "copy"}), 202),
    ("template-name", lambda i: ("POST", "/api/v1/templates", {"name": "gold", "vm": f"vm{i}"}),
     202),
    ("ova-export-path", lambda i: ("POST", f"/api/v1/vms/vm{i}/export-ova",
                                   {"file": "/var/tmp/corral-race-test.ova"}), 202),
    ("vm-delete", same("DELETE", "/api/v1/vms/vm0"), 202),
    ("image-delete", same("DELETE", "/api/v1/images/tiny2"), 202),
    ("volume-delete", same("DELETE", "/api/v1/storage/pools/data/volumes/vol"), 202),
    ("pool-delete", same("DELETE", "/api/v1/storage/pools/empty"), 202),
    ("network-delete", same("DELETE", "/api/v1/networks/spare"), 202),
    ("security-group-delete", same("DELETE", "/api/v1/security-groups/spare"), 204),
]


def _extra_rows(ctx: EngineContext) -> None:
    """What the delete cases delete: rows no VM uses."""
    with ctx.db.session() as s:
        host_id = s.query(StoragePool).filter_by(name="data").one().host_id
        s.add(Image(name="tiny2", status="ready", virtual_size=1 << 20, file_size=1 << 20))
        s.add(StoragePool(name="empty", type="dir", path="/var/tmp/corral-empty",
                          host_id=host_id, status="ready"))
        s.add(Network(name="spare", bridge="corral9", subnet="10.211.0.0/24",
                      gateway="10.211.0.1", dhcp_start="10.211.0.128",
                      dhcp_end="10.211.0.254", mode="isolated"))
        s.add(SecurityGroup(name="spare"))


@pytest.mark.parametrize("host", ["host-works", "host-fails"])
@pytest.mark.parametrize(("call", "ok"), [(c, ok) for _n, c, ok in CASES],
                         ids=[n for n, _c, _ok in CASES])
def test_one_of_n_concurrent_requests_wins_the_rest_get_409(
        api: Api, call: Callable[[int], tuple[str, str, dict[str, Any] | None]],
        ok: int, host: str) -> None:
    """And whether the operation the winner started then works or fails on the host, no row
    stays in transition."""
    api.host.broken = host == "host-fails"
    _extra_rows(api.ctx)
    assert_one_wins(api.race([call(i) for i in range(N)]), ok)
    api.settle()
    assert_nothing_in_transition(api.ctx)


def assert_nothing_in_transition(ctx: EngineContext) -> None:
    stuck: list[str] = []
    with ctx.db.session() as s:
        for model in (Image, Network, Vm, Nic, StoragePool, Volume):
            column = model.state if model is Vm else model.status  # type: ignore[attr-defined]
            for row in s.query(model).filter(column.in_(TRANSITIONAL)):
                stuck.append(f"{model.__tablename__} {getattr(row, 'name', row.id)}: "
                             f"{getattr(row, 'state', None) or row.status}")
    assert not stuck, f"rows left in transition by ended operations: {stuck}"


def test_image_deletes_racing_vm_creates_on_it(api: Api) -> None:
    """Either the image goes (every create on it refused with 404/409) or the creates that
    won keep it (every delete refused with 409); never both, never a row left ``deleting``."""
    _extra_rows(api.ctx)
    calls: list[tuple[str, str, dict[str, Any] | None]] = []
    for i in range(5):
        calls.append(("DELETE", "/api/v1/images/tiny2", None))
        calls.append(("POST", "/api/v1/vms", {"name": f"on{i}", "image": "tiny2",
                                               "memory": "64M"}))
    answers = api.race(calls)
    assert all(r.status_code < 500 for r in answers), [r.text for r in answers]
    deletes = [r for c, r in zip(calls, answers, strict=True) if c[0] == "DELETE"]
    creates = [r for c, r in zip(calls, answers, strict=True) if c[0] == "POST"]
    deleted = sum(r.status_code == 202 for r in deletes)
    created = sum(r.status_code == 202 for r in creates)
    assert deleted <= 1 and not (deleted and created), (deleted, created)
    api.settle()
    assert_nothing_in_transition(api.ctx)
    with api.ctx.db.session() as s:
        image = s.query(Image).filter_by(name="tiny2").one_or_none()
        if deleted:
            assert image is None
        else:
            assert image is not None and image.status == "ready"
