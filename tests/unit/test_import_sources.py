"""Local files and URLs an import may read, OVA files, pool directories (hardening, class 4).

The engine refuses at the API edge (no operation, no row); the agent refuses again. URLs to
loopback, link-local and host addresses are refused before anything connects, all with one
message: a listening socket on 127.0.0.1 and a spy on ``socket.create_connection`` show that
nothing connected. Traffic only to 127.0.0.1; every loop and wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.agent import ova
from corral.agent.download import download
from corral.agent.image_import import Importer
from corral.agent.storage import IMAGE_MODE, Storage, private_file
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Operation, StoragePool, Vm
from corral.engine.services.auth import create_token
from corral.errors import InvalidInput
from corral.lab.fileserver import FileServer, serving
from corral.safepaths import PathPolicy
from corral.safeurls import REFUSED, UrlPolicy

MIB = 1 << 20


# -- helpers -----------------------------------------------------------------------------------

class Listener:
    """A socket on 127.0.0.1 that counts the connections it accepts (until closed)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the timeout included: look at the stop flag again
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> int:
        self._stop.wait(0.2)  # a connection made just before would be accepted by now
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        return self.accepted


@pytest.fixture()
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture()
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address something connected to through socket.create_connection (httpcore's)."""
    seen: list[Any] = []
    real = socket.create_connection

    def spy(address: Any, *args: Any, **kw: Any) -> socket.socket:
        seen.append(address)
        return real(address, *args, **kw)

    monkeypatch.setattr(socket, "create_connection", spy)
    return seen


def refused_urls(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}/disk.raw", f"http://localhost:{port}/x",
            f"http://[::1]:{port}/x", f"http://0.0.0.0:{port}/x", f"http://2130706433:{port}/x",
            f"http://[::ffff:127.0.0.1]:{port}/x", "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/x", "http://127.0.0.1:8444/v1/health",  # the agent's own API
            "https://127.0.0.1:8443/api/v1/health"]


def raw_disk(path: Path, size: int = 4 * MIB) -> Path:
    with path.open("wb") as f:
        f.write(os.urandom(4096))
        f.truncate(size)
    return path


# -- the engine's edge ---------------------------------------------------------------------------

def _engine(tmp_path: Path, **settings: Any) -> tuple[TestClient, EngineContext]:
    data = tmp_path / "engine"
    (data / "import").mkdir(parents=True, exist_ok=True)
    ctx = build_context(EngineSettings(data_dir=data, agent_reconnect_s=0, **settings))
    storage = data / "agent" / "storage"
    with ctx.db.session() as s:
        host = Host(name="h1", url="http://127.0.0.1:9", status="up",
                    facts={"memory_mib": 4096, "cpus": 2, "storage_dir": str(storage),
                           "state_dir": str(data / "agent"), "console_dir": str(data / "c")})
        s.add(host)
        s.add(Host(name="h2", url="http://192.0.2.77:8444", status="down", facts={}))
        s.flush()
        s.add(StoragePool(name="default", type="dir", path=str(storage), host_id=host.id,
                          status="ready"))
        s.add(StoragePool(name="data", type="dir", path=str(tmp_path / "pools" / "data"),
                          host_id=host.id, status="ready"))
        tiny = Image(name="tiny", status="ready", format="qcow2", virtual_size=64 << 20)
        s.add(tiny)
        s.flush()
        s.add(Vm(name="idle", image_id=tiny.id, host_id=host.id, cpus=1, memory_mib=64,
                 disk_bytes=64 << 20, state="stopped", desired_power="stopped"))
    client = TestClient(create_app(ctx),
                        headers={"Authorization": f"Bearer {create_token(ctx, 'admin')}"})
    return client, ctx


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    client, ctx = _engine(tmp_path)
    yield client, ctx
    ctx.ops.shutdown()


def _nothing_made(ctx: EngineContext, images: int = 1, pools: int = 2) -> None:
    with ctx.db.session() as s:
        assert s.query(Operation).count() == 0
        assert s.query(Image).count() == images
        assert s.query(StoragePool).count() == pools


def _refused(resp: Any, field: str, words: str, status: int = 422) -> str:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["field"] == field and words in err["message"], err
    return str(err["message"])


def test_the_engines_database_is_no_image_source(engine: tuple[TestClient, EngineContext],
                                                 tmp_path: Path) -> None:
    client, ctx = engine
    db = ctx.settings.data_dir / "corral.db"
    assert db.is_file()
    resp = client.post("/api/v1/images", json={"name": "stolen", "source": str(db)})
    _refused(resp, "source", "is not in an import directory")
    _nothing_made(ctx)
    # An admin who adds a directory above the data dir does not open the data dir up.
    client2, ctx2 = _engine(tmp_path / "other", import_dirs=(tmp_path,))
    try:
        db2 = ctx2.settings.data_dir / "corral.db"
        resp = client2.post("/api/v1/images", json={"name": "stolen", "source": str(db2)})
        _refused(resp, "source", "corral's own data")
        _nothing_made(ctx2)
    finally:
        ctx2.ops.shutdown()


def test_symlinks_out_of_the_import_dir_are_refused(engine: tuple[TestClient, EngineContext]
                                                    ) -> None:
    client, ctx = engine
    imports = ctx.settings.data_dir / "import"
    (imports / "hosts.raw").symlink_to("/etc/hosts")
    (imports / "db.raw").symlink_to(ctx.settings.data_dir / "corral.db")
    resp = client.post("/api/v1/images", json={"name": "x", "source": str(imports / "hosts.raw")})
    _refused(resp, "source", "resolves to /etc/hosts) is in /etc, a system directory")
    resp = client.post("/api/v1/images", json={"name": "x", "source": str(imports / "db.raw")})
    _refused(resp, "source", "corral.db) is not in an import directory")
    _nothing_made(ctx)
    raw_disk(imports / "ok.raw")  # what the import dir is for
    resp = client.post("/api/v1/images", json={"name": "ok", "source": str(imports / "ok.raw")})
    assert resp.status_code == 202, resp.text


def test_ova_files_are_checked_before_an_operation_exists(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, ctx = engine
    for bad in ("/proc/x.ova", "/sys/x.ova", "/etc/x.ova", "/dev/shm/x.ova",
                str(ctx.settings.data_dir / "x.ova"),
                str(ctx.settings.data_dir / "agent" / "storage" / "vms" / "x.ova")):
        resp = client.post("/api/v1/vms/idle/export-ova", json={"file": bad})
        _refused(resp, "file", "corral does not write files there")
    for bad, words in [("/etc/passwd", "system directory"),
                       (str(ctx.settings.data_dir / "corral.db"), "not in an import directory")]:
        resp = client.post("/api/v1/ova-imports", json={"file": bad})
        _refused(resp, "file", words)
    _nothing_made(ctx)


def test_the_agent_checks_ova_paths_again(tmp_path: Path) -> None:
    policy = PathPolicy(protected=(tmp_path / "state",))
    for bad in ("/proc/x.ova", str(tmp_path / "state" / "x.ova")):
        with pytest.raises(InvalidInput, match="corral does not write files there") as exc:
            ova._check_target(policy, bad)
        assert exc.value.field == "file"
    with pytest.raises(InvalidInput, match="not in an import directory"):
        ova._source(policy, str(tmp_path / "in.ova"))


def test_refused_urls_at_the_edge_connect_to_nothing(
        engine: tuple[TestClient, EngineContext], listener: Listener, connects: list[Any]) -> None:
    client, ctx = engine
    messages = set()
    for url in [*refused_urls(listener.port), "http://192.0.2.77:8444/x"]:  # h2's agent
        resp = client.post("/api/v1/images", json={"name": "x", "source": url})
        messages.add(_refused(resp, "source", "not allowed"))
    assert messages == {REFUSED}  # one message: nothing tells what answered, or that anything
    assert listener.close() == 0 and connects == []
    _nothing_made(ctx)
    ok = client.post("/api/v1/images", json={"name": "deb", "source": "http://192.0.2.10/d.raw"})
    assert ok.status_code == 202, ok.text


def test_an_allowed_range_permits_a_local_mirror(tmp_path: Path, listener: Listener) -> None:
    client, ctx = _engine(tmp_path, import_allow_cidrs=("127.0.0.0/8",))
    try:
        resp = client.post("/api/v1/images", json={
            "name": "mirror", "source": f"http://127.0.0.1:{listener.port}/disk.raw"})
        assert resp.status_code == 202, resp.text
    finally:
        ctx.ops.shutdown()


# -- the agent: the downloader and the importer --------------------------------------------------

@pytest.fixture()
def served(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "srv"
    root.mkdir()
    raw_disk(root / "disk.raw")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(root / "disk.raw"),
                    str(root / "disk.qcow2")], check=True, timeout=60)
    with serving(root) as srv:
        yield srv


def test_the_downloader_refuses_before_connecting(tmp_path: Path, listener: Listener,
                                                  connects: list[Any]) -> None:
    dest = tmp_path / "out"
    storage = Storage(tmp_path / "store")
    for url in refused_urls(listener.port):
        with pytest.raises(InvalidInput) as exc:
            download(url, dest)  # the default policy
        assert exc.value.message == REFUSED and exc.value.field == "source"
        with pytest.raises(InvalidInput, match=r"^source URL points to a loopback"):
            Importer(storage, "x", url)  # refused when the request comes, before a job
        assert not dest.exists()
    assert listener.close() == 0 and connects == []


def test_an_allowed_range_downloads_and_pins_the_checked_address(
        served: FileServer, tmp_path: Path, connects: list[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kw: Any) -> Any:
        return real("127.0.0.1" if host == "mirror.test" else host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    url = f"http://mirror.test:{served.port}/disk.raw"
    got = download(url, tmp_path / "out", guard=UrlPolicy.build(["127.0.0.0/8"]))
    assert got.size == 4 * MIB
    assert connects == [("127.0.0.1", served.port)]  # the checked address, not the name


def test_a_name_that_turns_into_loopback_is_refused(tmp_path: Path, listener: Listener,
                                                    connects: list[Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["198.51.100.7"] + ["127.0.0.1"] * 20)  # DNS rebinding: public, then loopback
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kw: Any) -> Any:
        return real(next(answers) if host == "rebind.test" else host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(InvalidInput) as exc:
        download(f"http://rebind.test:{listener.port}/x", tmp_path / "out", retries=0)
    assert exc.value.message == REFUSED
    assert listener.close() == 0 and connects == []


class _Redirect(BaseHTTPRequestHandler):
    target = ""

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirect_to_loopback_is_refused(served: FileServer, tmp_path: Path,
                                           listener: Listener, connects: list[Any]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    port = int(server.server_address[1])
    guard = UrlPolicy.build(["127.0.0.1/32"])  # the redirecting server is allowed
    try:
        # 0.0.0.0 is this host (it reaches the listener on 127.0.0.1): never allowed
        _Redirect.target = f"http://0.0.0.0:{listener.port}/x"
        with pytest.raises(InvalidInput) as exc:
            download(f"http://127.0.0.1:{port}/go", tmp_path / "out", guard=guard, retries=0)
        assert exc.value.message == REFUSED and not (tmp_path / "out").exists()
        assert connects == [("127.0.0.1", port)]
        # a redirect to an allowed address is followed
        _Redirect.target = served.url("disk.raw")
        assert download(f"http://127.0.0.1:{port}/go", tmp_path / "out",
                        guard=guard).size == 4 * MIB
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert listener.close() == 0


# -- what the agent writes is not world-readable -------------------------------------------------

def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_image_files_are_not_world_readable(served: FileServer, tmp_path: Path) -> None:
    storage = Storage(tmp_path / "store")
    allowed: dict[str, Any] = {
        "paths": PathPolicy(import_dirs=(tmp_path / "srv",)),
        "urls": UrlPolicy.build(["127.0.0.0/8"])}
    for name, source in [("local", str(tmp_path / "srv" / "disk.raw")),
                         ("fromurl", served.url("disk.raw")),
                         ("kept", served.url("disk.qcow2"))]:
        Importer(storage, name, source, **allowed).run(lambda _p, _m: None)
        assert _mode(storage.image_path(name)) == IMAGE_MODE == 0o640, name
    disk = storage.create_disk("vm1", "local", None)
    assert _mode(Path(disk["path"])) == IMAGE_MODE
    blank = storage.create_disk("vm2", None, 8 * MIB)
    assert _mode(Path(blank["path"])) == IMAGE_MODE
    part = tmp_path / "x.part"
    part.write_bytes(b"old")
    part.chmod(0o666)
    private_file(part)
    assert _mode(part) == IMAGE_MODE and part.read_bytes() == b""


def test_the_agent_refuses_the_database_and_etc_as_sources(tmp_path: Path) -> None:
    data = tmp_path / "corral"
    (data / "import").mkdir(parents=True)
    (data / "corral.db").write_bytes(b"SQLite format 3\x00")
    (data / "import" / "etc.raw").symlink_to("/etc/passwd")
    storage = Storage(data / "agent" / "storage")
    paths = PathPolicy(import_dirs=(data / "import", tmp_path), protected=(data,))
    with pytest.raises(InvalidInput, match="corral's own data"):
        Importer(storage, "x", str(data / "corral.db"), paths=paths)
    with pytest.raises(InvalidInput, match="system directory"):
        Importer(storage, "x", str(data / "import" / "etc.raw"), paths=paths)
    with pytest.raises(InvalidInput, match="not in an import directory"):
        Importer(storage, "x", str(tmp_path / "x.raw"))  # the default: no local file at all
    assert sorted(p.name for p in storage.images.iterdir()) == []


# -- pools ---------------------------------------------------------------------------------------

def test_pools_on_corral_or_system_dirs_or_nested_are_refused(
        engine: tuple[TestClient, EngineContext], tmp_path: Path) -> None:
    client, ctx = engine
    data = ctx.settings.data_dir
    for path, words in [(str(data), "which corral keeps for itself"),
                        (str(data / "tls"), "which corral keeps for itself"),
                        (str(tmp_path), "which corral keeps for itself"),  # it holds the data dir
                        ("/etc/corral", "a system directory"), ("/proc/p", "a system directory"),
                        ("/usr/lib/vms", "a system directory"), ("/var/lib", "system directory")]:
        resp = client.post("/api/v1/storage/pools", json={"name": "p", "path": path})
        _refused(resp, "path", words)
    for path in (str(tmp_path / "pools" / "data" / "inner"), str(tmp_path / "pools")):
        resp = client.post("/api/v1/storage/pools", json={"name": "p", "path": path})
        _refused(resp, "path", "pools do not nest", status=409)
    resp = client.post("/api/v1/storage/pools", json={
        "name": "c", "type": "rbd", "ceph_pool": "rbd", "ceph_conf": str(data / "corral.db")})
    _refused(resp, "ceph_conf", "not a configuration file")
    _nothing_made(ctx)
