"""Hosts join with one-time tokens, then engine and agent accept only each other's
certificates: a real engine over HTTPS on loopback (uvicorn, SQLite, its own CA)."""

from __future__ import annotations

import datetime as dt
import http.client
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from api_server import serving
from fastapi import FastAPI

from corral.agent.join import join
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, JoinToken
from corral.engine.services.auth import create_token
from corral.engine.tls import ensure_engine_client, ensure_tls
from corral.errors import Conflict, InvalidInput, Unauthorized
from corral.host_identity import Identity
from corral.peercert import PeerCertProtocol
from corral.pki import fingerprint, join_token


@dataclass
class Engine:
    ctx: EngineContext
    url: str
    admin: httpx.Client

    def token(self, ttl_s: int = 3600) -> str:
        resp = self.admin.post("/api/v1/hosts/tokens", json={"ttl_s": ttl_s})
        assert resp.status_code == 201, resp.text
        token: str = resp.json()["token"]
        return token

    def host(self, name: str) -> Host | None:
        with self.ctx.db.session() as s:
            row = s.query(Host).filter_by(name=name).one_or_none()
            if row is not None:
                s.expunge(row)
            return row


def _engine_on(data: Path) -> Iterator[Engine]:
    ctx = build_context(EngineSettings(data_dir=data))
    ca, cert, key = ensure_tls(ctx.settings.tls_dir)
    with serving(create_app(ctx), ssl_certfile=str(cert), ssl_keyfile=str(key),
                 ssl_ca_certs=str(ca), ssl_cert_reqs=ssl.CERT_OPTIONAL,
                 http=PeerCertProtocol) as url:
        admin = httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=ca), headers={
            "Authorization": f"Bearer {create_token(ctx, 'admin')}"})
        with admin:
            yield Engine(ctx, url, admin)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from _engine_on(tmp_path / "engine")


def _join(engine: Engine, token: str, name: str, tmp: Path) -> Identity:
    identity = Identity.of(tmp / name)
    url = f"https://127.0.0.1:{10000 + sum(map(ord, name))}"  # one per name
    join(engine.url, token, name, url, ["127.0.0.1"], identity)
    return identity


def test_a_host_joins_once_with_its_token(engine: Engine, tmp_path: Path) -> None:
    token = engine.token()
    identity = _join(engine, token, "h2", tmp_path)
    host = engine.host("h2")
    assert host is not None and host.status == "down"  # until its agent says it is there
    assert host.cert_fingerprint == fingerprint(identity.cert.read_bytes())
    assert identity.engine_url == engine.url
    # Spent: a second host cannot use it, and the engine said by whom it was.
    with pytest.raises(Unauthorized, match=r"already used .*h2"):
        _join(engine, token, "h3", tmp_path)
    assert engine.host("h3") is None and not Identity.of(tmp_path / "h3").exists()


def test_a_wrong_or_expired_token_is_refused_and_spends_nothing(engine: Engine,
                                                               tmp_path: Path) -> None:
    real = engine.token()
    fp, _, _ = real.removeprefix("corral-join.").partition(".")
    with pytest.raises(Unauthorized, match="unknown join token"):
        _join(engine, join_token(fp, "not-the-secret"), "h2", tmp_path)
    with pytest.raises(InvalidInput, match="not a join token"):
        _join(engine, "hunter2", "h2", tmp_path)
    expired = engine.token(ttl_s=60)
    with engine.ctx.db.session() as s:
        for row in s.query(JoinToken):
            if row.used_at is None and row.expires_at < dt.datetime.now(dt.UTC) + \
                    dt.timedelta(seconds=120):
                row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with pytest.raises(Unauthorized, match="expired"):
        _join(engine, expired, "h2", tmp_path)
    assert engine.host("h2") is None
    _join(engine, real, "h2", tmp_path)  # the failures did not spend the real one
    assert engine.host("h2") is not None


def test_a_token_of_another_engine_is_refused_before_anything_is_sent(
        engine: Engine, tmp_path: Path) -> None:
    engines = _engine_on(tmp_path / "other")
    try:
        foreign = next(engines).token()  # names the other engine's CA, not this one's
    finally:
        engines.close()
    with pytest.raises(Unauthorized, match=r"shows CA .* not the"):
        _join(engine, foreign, "h2", tmp_path)
    assert engine.host("h2") is None


def test_a_member_cannot_join_twice_under_its_name(engine: Engine, tmp_path: Path) -> None:
    _join(engine, engine.token(), "h2", tmp_path)
    with pytest.raises(Conflict, match="already a member"):
        _join(engine, engine.token(), "h2", tmp_path / "again")


def _agent_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _foreign_client_cert(tmp: Path) -> tuple[str, str]:
    """A client certificate named like the engine's, from a CA of its own."""
    tls = tmp / "foreign-tls"
    ensure_tls(tls)
    pem, key = ensure_engine_client(tls)
    return str(pem), str(key)


def test_the_agent_accepts_the_engine_and_nobody_else(engine: Engine, tmp_path: Path) -> None:
    agent = _join(engine, engine.token(), "h2", tmp_path)
    other = _join(engine, engine.token(), "h3", tmp_path)
    ca = str(agent.ca)
    with serving(_agent_app(),
                 ssl_context_factory=lambda _c, _d: agent.server_context()) as base:
        url = f"{base}/v1/health"
        # The engine: its CA-issued client certificate, pinned by the agent at join.
        assert httpx.get(url, verify=engine.ctx.agent_tls()).json() == {"status": "ok"}
        refused: list[httpx.Client] = [
            httpx.Client(verify=ssl.create_default_context(cafile=ca)),  # no certificate
            httpx.Client(verify=ssl_with(ca, *_foreign_client_cert(tmp_path))),  # other CA
            # another host of the same cluster: same CA, but not the engine
            httpx.Client(verify=ssl_with(ca, str(other.cert), str(other.key))),
        ]
        for client in refused:
            with client, pytest.raises(httpx.HTTPError):
                client.get(url).raise_for_status()


def ssl_with(ca: str, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


class _NoDomains:
    """The hypervisor as the reporter sees it: no domains (the report's digest is of none)."""

    uri = "test:///default"

    def list_domains(self) -> list[object]:
        return []

    def cpu_times(self) -> dict[str, int]:
        return {}


def _report_once(identity: Identity) -> None:
    from corral.agent.reporter import Reporter

    reporter = Reporter(identity, _NoDomains(), interval_s=1.0)  # type: ignore[arg-type]
    report, _ = reporter.build(seq=0)
    url = httpx.URL(identity.engine_url)
    conn = http.client.HTTPSConnection(url.host, url.port, timeout=10,
                                       context=identity.engine_context())
    try:
        reporter._post(conn, report.model_dump_json().encode())
    finally:
        conn.close()


def test_a_joined_host_that_reports_is_up_and_a_removed_one_is_refused(
        engine: Engine, tmp_path: Path) -> None:
    identity = _join(engine, engine.token(), "h2", tmp_path)
    _report_once(identity)
    host = engine.host("h2")
    assert host is not None and host.status == "up"
    with engine.ctx.db.session() as s:  # removed: its certificate no longer matches a host
        s.query(Host).filter_by(name="h2").delete()
    with pytest.raises(OSError, match="HTTP 401"):
        _report_once(identity)
    # Without a certificate nobody is taken for a host.
    resp = httpx.post(f"{engine.url}/api/v1/agent/report", json={},
                      verify=ssl.create_default_context(cafile=str(identity.ca)))
    assert resp.status_code == 401 and "mutual TLS" in resp.json()["error"]["message"]
