"""corral writes corosync's configuration as hosts join and leave: the engine renders the
cluster's corosync.conf and knet key (engine/services/ha_corosync.py), each answer to a
report carries their digest, and an agent run with `--corosync-conf PATH` fetches and writes
them when its own differ, then has a running corosync reload (agent/corosync_files.py)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_seed import engine_context
from fastapi.testclient import TestClient

from corral.agent.corosync_files import CorosyncKeeper
from corral.agent.reporter import Reporter
from corral.agent_api.reports import CorosyncFiles, HostReport, ReportAnswer
from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.engine.reconciler import Reconciler
from corral.engine.services import ha_corosync


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path / "engine")


def _files(ctx: EngineContext) -> CorosyncFiles:
    return ha_corosync.files(ctx)


def test_the_engine_renders_every_host_with_one_key_kept_secret(ctx: EngineContext) -> None:
    first = _files(ctx)
    with ctx.db.session() as s:
        names = [h.name for h in s.query(Host)]
    assert all(f"name: {n}" in first.conf for n in names)
    key = ctx.settings.data_dir / "corosync-authkey"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(first.authkey)) == 256
    assert _files(ctx) == first  # the same key, the same digest, until the hosts change
    with ctx.db.session() as s:
        s.add(Host(name="h9", url="https://10.0.0.9:8444", status="up"))
    after = _files(ctx)
    assert "name: h9" in after.conf and after.digest != first.digest
    assert after.authkey == first.authkey


def test_each_answer_carries_the_digest_and_the_route_needs_a_host_certificate(
        ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        host_id = s.query(Host.id).first()[0]  # type: ignore[index]
    report = HostReport(boot_id="b", seq=0, interval_s=1.0, digest="", domains=0, load_1m=0,
                        memory_available_mib=1000)
    answer = Reconciler(ctx).report(host_id, report)
    assert answer.corosync_digest == _files(ctx).digest
    resp = TestClient(create_app(ctx)).get("/api/v1/agent/corosync")
    assert resp.status_code == 401  # no client certificate: not a host


def test_an_agent_writes_the_files_when_they_differ_and_only_then(ctx: EngineContext,
                                                                   tmp_path: Path) -> None:
    files = _files(ctx)
    conf = tmp_path / "etc" / "corosync" / "corosync.conf"
    keeper = CorosyncKeeper(conf, pidfile=tmp_path / "none.pid")
    assert keeper.wants(files.digest) and not keeper.wants(None)
    keeper.write(files)
    assert conf.read_text() == files.conf and conf.stat().st_mode & 0o777 == 0o644
    authkey = conf.parent / "authkey"
    assert base64.b64encode(authkey.read_bytes()).decode() == files.authkey
    assert authkey.stat().st_mode & 0o777 == 0o400
    assert not keeper.wants(files.digest)
    assert not CorosyncKeeper(conf).wants(files.digest)  # read back after a restart


def test_files_that_do_not_match_their_digest_are_not_written(ctx: EngineContext,
                                                              tmp_path: Path) -> None:
    bad = _files(ctx).model_copy(update={"conf": "totem {}\n"})
    keeper = CorosyncKeeper(tmp_path / "corosync.conf", pidfile=tmp_path / "none.pid")
    with pytest.raises(ValueError, match="digest"):
        keeper.write(bad)
    assert not (tmp_path / "corosync.conf").exists()


def test_a_running_corosync_is_told_to_reload(ctx: EngineContext, tmp_path: Path) -> None:
    """A process named corosync behind the pid file (a copy of sleep): the reload command
    (here one that leaves a mark) runs after the files are written."""
    fake = tmp_path / "corosync"
    shutil.copy("/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        pidfile = tmp_path / "corosync.pid"
        pidfile.write_text(f"{proc.pid}\n")
        mark = tmp_path / "reloaded"
        keeper = CorosyncKeeper(tmp_path / "c" / "corosync.conf", pidfile=pidfile,
                                reload_argv=("touch", str(mark)))
        keeper.write(_files(ctx))
        assert mark.exists()
    finally:
        proc.kill()
        proc.wait(timeout=10)


class _Conn:
    """http.client's side of the reporter's connection, answering the files' fetch."""

    def __init__(self, body: bytes) -> None:
        self.body, self.asked = body, []  # type: list[str]

    def request(self, method: str, path: str) -> None:
        self.asked.append(f"{method} {path}")

    def getresponse(self) -> _Conn:
        return self

    status = 200

    def read(self) -> bytes:
        return self.body

    def close(self) -> None:
        pass


def test_the_reporter_fetches_them_when_the_answer_says_they_changed(
        ctx: EngineContext, tmp_path: Path) -> None:
    files = _files(ctx)
    conf = tmp_path / "corosync.conf"
    rep = Reporter(object(), type("Hv", (), {"uri": "test:///default"})(),  # type: ignore[arg-type]
                   corosync=CorosyncKeeper(conf, pidfile=tmp_path / "none.pid"))
    conn = _Conn(files.model_dump_json().encode())
    answer = ReportAnswer(host="h1", status="up", corosync_digest=files.digest)
    rep._answered(conn, time.monotonic(), answer.model_dump_json().encode())  # type: ignore[arg-type]
    assert conn.asked == ["GET /api/v1/agent/corosync"] and conf.read_text() == files.conf
    rep._answered(conn, time.monotonic(), answer.model_dump_json().encode())  # type: ignore[arg-type]
    assert conn.asked == ["GET /api/v1/agent/corosync"]  # the same digest: not fetched again
