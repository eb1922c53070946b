"""Parsing of user input has a bounded cost, and no request stalls the engine.

Reported: 303 bytes of ``#cloud-config`` with nested YAML aliases (a "billion laughs") took
40 s to accept, during which the engine (health included) did not answer; every later
``GET /api/v1/vms`` parsed it again. Now YAML from users is read without anchors or aliases,
with bounded nesting, nodes and integers (a 422 naming the field, at once); the parse runs
in a worker thread when the settings are written, never on a read; a request body is at most
``BODY_MAX`` bytes.

The engine runs for real (SQLite, routes, services); its host is a stand-in agent that
answers at once (no traffic leaves the process but to 127.0.0.1).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from api_server import QuickHost, serving
from engine_seed import seed_node
from fastapi.testclient import TestClient

from corral.api import CloudInit
from corral.cloudinit import yamlout
from corral.cloudinit.validate import MAX_DOC
from corral.engine.app import build_context, create_app, freeze_start_heap
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Operation, Vm
from corral.engine.services import vm_cloudinit
from corral.engine.services.auth import create_token
from corral.httpserve import BODY_MAX


def billion_laughs(levels: int = 8) -> str:
    """Nine "x" at the first level, each next level nine aliases of the one before: 9**9
    strings once expanded, from about 300 bytes."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = [f'{names[0]}: &{names[0]} ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels + 1):
        prev = names[i - 1]
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "#cloud-config\n" + "\n".join(lines) + "\n"


def worst_legal() -> str:
    """As much work as a legal #cloud-config can ask for: close to the size limit, close to
    the node limit, every scalar a plain one with spaces (the slowest to scan)."""
    item = "a b c d e f g h i j k l m"  # 25 characters
    count = min(yamlout.MAX_NODES - 10, (MAX_DOC - 64) // (len(item) + 1))
    text = "#cloud-config\nk: [" + ",".join([item] * count) + "]\n"
    assert len(text.encode()) <= MAX_DOC
    return text


def near_limit() -> str:
    """A big, ordinary cloud-config: a large file to write, some packages and commands."""
    head = ("#cloud-config\npackages: [nginx, git, curl]\nruncmd:\n- [systemctl, enable, nginx]\n"
            "- echo done\nwrite_files:\n- path: /srv/www/index.html\n  permissions: '0644'\n"
            "  content: |\n")
    line = "    <p>lorem ipsum dolor sit amet, consectetur adipiscing elit</p>\n"
    text = head + line * ((MAX_DOC - len(head) - 512) // len(line))
    assert MAX_DOC - 1024 < len(text.encode()) <= MAX_DOC
    return text


STORED_USER_DATA = "#cloud-config\npackages: [git]\nruncmd:\n- echo hi\n"


@pytest.fixture()
def host() -> Iterator[QuickHost]:
    host = QuickHost()
    yield host
    host.open()


@pytest.fixture()
def ctx(tmp_path: Path, host: QuickHost) -> Iterator[EngineContext]:
    """One host (a stand-in agent), the tiny image, the default network, and a stopped VM
    ``idle`` with #cloud-config user-data."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(host)
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        image = s.query(Image).one()
        net = s.query(Network).one()
        vm = Vm(name="idle", image_id=image.id, host_id=host.id, cpus=1, memory_mib=64,
                disk_bytes=64 << 20, state="stopped", desired_power="stopped",
                cloud_init=vm_cloudinit.stored(CloudInit(user_data=STORED_USER_DATA)))
        s.add(vm)
        s.flush()
        s.add(Nic(vm_id=vm.id, network_id=net.id, mac="52:54:00:00:00:02", idx=0))
    try:
        yield ctx
    finally:
        ctx.ops.shutdown()


@pytest.fixture()
def client(ctx: EngineContext) -> TestClient:
    return TestClient(create_app(ctx), headers={"Authorization": f"Bearer {create_token(ctx, 'admin')}"})


def _counts(ctx: EngineContext) -> tuple[int, int]:
    with ctx.db.session() as s:
        return s.query(Vm).count(), s.query(Operation).count()


def _create(client: TestClient, cloud_init: dict[str, Any], name: str = "new") -> httpx.Response:
    return client.post("/api/v1/vms", json={"name": name, "image": "tiny", "cloud_init": cloud_init})


REFUSED = [
    pytest.param({"user_data": billion_laughs()}, "cloud_init.user_data", "aliases", id="laughs"),
    pytest.param({"user_data": "#cloud-config\na: &a [*a]\n"}, "cloud_init.user_data", "aliases",
                 id="recursive-alias"),
    pytest.param({"user_data": "#cloud-config\nk: " + "[" * 100_000 + "]" * 100_000},
                 "cloud_init.user_data", "nest", id="deep-flow"),
    pytest.param({"user_data": "#cloud-config\n" + "".join(" " * i + "k:\n" for i in range(200))},
                 "cloud_init.user_data", "nest", id="deep-block"),
    pytest.param({"user_data": "#cloud-config\nk: [" + "1," * 100_000 + "]\n"},
                 "cloud_init.user_data", "nodes", id="too-many-nodes"),
    pytest.param({"user_data": "#cloud-config\nk: " + "1" * 5000 + "\n"}, "cloud_init.user_data",
                 "integer", id="huge-int"),
    pytest.param({"user_data": "#cloud-config\nk: 1:" + ":".join(["30"] * 80_000) + "\n"},
                 "cloud_init.user_data", "integer", id="base-60-int"),
    pytest.param({"user_data": "#cloud-config\nk: 2020-13-45\n"}, "cloud_init.user_data",
                 "month", id="bad-date"),
    pytest.param({"user_data": "#cloud-config\n" + "x" * MAX_DOC}, "cloud_init.user_data",
                 "longer than", id="too-large"),  # characters; bytes: "larger than"
    pytest.param({"user_data": "#cloud-config\n#" + "é" * (MAX_DOC // 2)},
                 "cloud_init.user_data", "larger than", id="too-many-bytes"),
    pytest.param({"network_config": "version: 2\nethernets: &e {a: {dhcp4: true}}\nx: *e\n"},
                 "cloud_init.network_config", "aliases", id="network-alias"),
]


@pytest.mark.parametrize(("cloud_init", "field", "words"), REFUSED)
def test_costly_yaml_is_refused_on_create_at_once_and_nothing_made(
        ctx: EngineContext, client: TestClient, cloud_init: dict[str, Any], field: str, words: str,
) -> None:
    before = _counts(ctx)
    started = time.monotonic()
    resp = _create(client, cloud_init)
    elapsed = time.monotonic() - started
    assert resp.status_code == 422, resp.text[:500]
    error = resp.json()["error"]
    assert error["code"] == "invalid_input" and error["field"] == field
    assert words in error["message"]
    assert elapsed < 3, f"refused after {elapsed:.1f} s"
    assert _counts(ctx) == before


@pytest.mark.parametrize(("cloud_init", "field", "words"), REFUSED[:3])
def test_costly_yaml_is_refused_on_patch_and_nothing_changed(
        ctx: EngineContext, client: TestClient, cloud_init: dict[str, Any], field: str, words: str,
) -> None:
    before = _counts(ctx)
    started = time.monotonic()
    resp = client.patch("/api/v1/vms/idle", json={"cloud_init": cloud_init})
    elapsed = time.monotonic() - started
    assert resp.status_code == 422, resp.text[:500]
    assert resp.json()["error"]["field"] == field and words in resp.json()["error"]["message"]
    assert elapsed < 3, f"refused after {elapsed:.1f} s"
    assert _counts(ctx) == before
    assert client.get("/api/v1/vms/idle/cloud-init").json()["user_data"] == STORED_USER_DATA


def test_a_large_legal_user_data_is_accepted(ctx: EngineContext, client: TestClient,
                                            host: QuickHost) -> None:
    text = near_limit()
    host.close()  # the operations wait: the rows stay as the requests left them
    resp = _create(client, {"user_data": text})
    assert resp.status_code == 202, resp.text[:500]
    resp = client.patch("/api/v1/vms/idle", json={"cloud_init": {"user_data": text}})
    assert resp.status_code == 202, resp.text[:500]
    with ctx.db.session() as s:  # kept as given
        assert s.query(Vm).filter_by(name="new").one().cloud_init["user_data"] == text
    host.open()
    files = vm_cloudinit.seed_files("id", "new", None, {"user_data": text})
    assert yaml.safe_load(files["user-data"])["write_files"][0]["content"].count("lorem") > 3000


def test_the_worst_legal_user_data_costs_little(ctx: EngineContext, client: TestClient) -> None:
    started = time.monotonic()
    resp = _create(client, {"user_data": worst_legal()})
    elapsed = time.monotonic() - started
    assert resp.status_code == 202, resp.text[:500]
    assert elapsed < 5, f"accepted after {elapsed:.1f} s"


def test_a_request_body_is_bounded(client: TestClient) -> None:
    big = b'{"name": "' + b"x" * BODY_MAX + b'"}'
    resp = client.post("/api/v1/vms", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it comes
        for start in range(0, len(big), 1 << 20):
            yield big[start:start + (1 << 20)]

    resp = client.post("/api/v1/vms", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["field"] == "body"


def test_reads_never_parse_the_user_data(ctx: EngineContext, client: TestClient,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a read parsed YAML")

    for target, name in ((yaml, "load"), (yaml, "safe_load"), (yaml, "compose"),
                         (yaml.SafeLoader, "get_single_data"), (yamlout, "load_mapping")):
        monkeypatch.setattr(target, name, no_parse)
    started = time.monotonic()
    listed = client.get("/api/v1/vms")
    shown = client.get("/api/v1/vms/idle")
    whole = client.get("/api/v1/vms/idle/cloud-init")  # the user-data itself (vm.secrets)
    assert listed.status_code == 200 and shown.status_code == 200, listed.text[:500]
    assert [vm["cloud_init"]["user_data_set"] for vm in listed.json()] == [True]
    assert shown.json()["cloud_init"]["user_data_set"] is True
    assert whole.status_code == 200 and whole.json()["user_data"] == STORED_USER_DATA
    assert time.monotonic() - started < 2


@pytest.mark.timeout(120)
def test_health_answers_while_the_worst_legal_request_is_parsed(
        ctx: EngineContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user checks: while the engine works on the costliest cloud-config it accepts,
    /api/v1/health still answers, each time in under 100 ms."""
    parsing, parsed = threading.Event(), threading.Event()
    real = yamlout.load_mapping

    def watched(text: str, field: str, what: str) -> dict[str, Any]:
        if field == "cloud_init.user_data" and not threading.current_thread().name.startswith("op"):
            parsing.set()  # the request's own check (operation workers render it again later)
            try:
                return real(text, field, what)
            finally:
                parsed.set()
        return real(text, field, what)

    monkeypatch.setattr(yamlout, "load_mapping", watched)
    token = create_token(ctx, "admin")
    body = {"name": "slow", "image": "tiny", "cloud_init": {"user_data": worst_legal()}}
    answers: list[httpx.Response | BaseException] = []
    # A new connection for each check, as curl or a load balancer's probe makes.
    fresh = httpx.Limits(max_keepalive_connections=0)
    app = create_app(ctx)
    # The engine's lifespan does this; the test server runs without it (no reconciler), and
    # this process holds the whole test session's heap.
    freeze_start_heap()
    with serving(app) as url, httpx.Client(base_url=url, timeout=30, limits=fresh) as c:
        assert c.get("/api/v1/health").status_code == 200  # the app is warm

        def slow() -> None:
            with httpx.Client(base_url=url, timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as other:
                try:
                    answers.append(other.post("/api/v1/vms", json=body))
                except BaseException as exc:  # reported below
                    answers.append(exc)

        sender = threading.Thread(target=slow, name="slow-request")
        sender.start()
        try:
            assert parsing.wait(30), "the request never reached the user-data check"
            latencies: list[float] = []
            while not parsed.is_set() and len(latencies) < 500:
                started = time.perf_counter()
                resp = c.get("/api/v1/health")
                latencies.append(time.perf_counter() - started)
                assert resp.status_code == 200 and resp.json()["status"] == "ok"
        finally:
            sender.join(60)
            gc.unfreeze()
        assert not sender.is_alive(), "the slow request did not come back in 60 s"
    assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
    assert answers[0].status_code == 202, answers[0].text[:500]
    assert latencies, "no health check overlapped the parse"
    assert max(latencies) < 0.1, f"health took {max(latencies) * 1000:.0f} ms during the parse " \
                                 f"({len(latencies)} checks)"


def test_a_deeply_nested_json_body_is_a_4xx(client: TestClient) -> None:
    deep = b'{"name": "n", "image": "tiny", "cloud_init": {"user_data": ' + b"[" * 200_000 \
        + b"]" * 200_000 + b"}}"
    started = time.monotonic()
    resp = client.post("/api/v1/vms", content=deep, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text[:300]
    assert time.monotonic() - started < 3
