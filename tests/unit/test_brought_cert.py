"""A certificate an admin brings (`corral up --tls-cert/--tls-key`, `corral cert set`):
checked before the engine starts, shown to clients that ask for one of its names, while
agents and clients that reach the engine by IP address keep corral's own certificate; a
remote added with the CA that signed it (`remote add --ca`) works, the default pinning
still refuses it.

Real handshakes against uvicorn on loopback; the brought certificate's name resolves to
127.0.0.1 through a patched getaddrinfo (no DNS)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import serving
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from corral.cli.main import app as cli_app
from corral.client import remotes
from corral.engine import server_tls
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineSettings
from corral.engine.services.auth import create_token
from corral.engine.tls import ensure_tls
from corral.errors import InvalidInput
from corral.node import paths
from corral.node.up import UpOptions
from corral.pki import ENGINE_SNI, engine_client_context, fingerprint

NAME = "corral.example.test"
ENV = ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_CA", "CORRAL_DATA_DIR", "CORRAL_REMOTE")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any, password: bytes | None = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    return bytes(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8, enc))


@dataclass
class CompanyCa:
    """A CA of the admin's company, which signs certificates for the engine's name."""

    dir: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem_file(self) -> Path:
        path = self.dir / "company-ca.pem"
        path.write_bytes(_pem(self.cert))
        return path

    def issue(self, names: list[str], *, days: int = 90, start_days: int = -1,
              key: Any = None, stem: str = "engine") -> tuple[Path, Path]:
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                               names[0] if names else stem)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now + dt.timedelta(days=start_days))
                   .not_valid_after(now + dt.timedelta(days=days)))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        cert_file.write_bytes(_pem(cert) + _pem(self.cert))  # the chain after it
        key_file.write_bytes(_key_pem(key))
        return cert_file, key_file


@pytest.fixture
def company(tmp_path: Path) -> CompanyCa:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path / "company"
    d.mkdir()
    return CompanyCa(d, cert, key)


# -- checks before the engine starts -------------------------------------------------------

def test_a_good_certificate_is_taken_with_its_names(company: CompanyCa) -> None:
    cert, key = company.issue([NAME, "*.corral.example.test"])
    brought = server_tls.check_brought(cert, key)
    assert brought.names == (NAME, "*.corral.example.test")
    assert brought.covers(NAME) and brought.covers("API.Corral.Example.Test.")
    assert not brought.covers("a.b.corral.example.test") and not brought.covers("example.test")


def test_what_would_not_serve_is_said_before_the_start(company: CompanyCa,
                                                       tmp_path: Path) -> None:
    cert, key = company.issue([NAME])
    other_cert, other_key = company.issue(["other.example.test"], stem="other")
    expired = company.issue([NAME], days=-1, start_days=-30, stem="expired")
    nameless = company.issue([], stem="nameless")
    locked = tmp_path / "locked.key"
    locked.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1()), b"secret"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (tmp_path / "missing.pem", key, "tls_cert", "cannot read"),
        (cert, tmp_path / "missing.key", "tls_key", "cannot read"),
        (garbage, key, "tls_cert", "no PEM certificate"),
        (cert, other_key, "tls_key", "is not the key of the certificate"),
        (other_cert, key, "tls_key", "is not the key of the certificate"),
        (cert, locked, "tls_key", "encrypted"),
        (*expired, "tls_cert", "expired"),
        (*nameless, "tls_cert", "no DNS name"),
    ]
    for cert_file, key_file, field, words in cases:
        with pytest.raises(InvalidInput) as exc:
            server_tls.check_brought(cert_file, key_file)
        assert exc.value.field == field and words in exc.value.message, (cert_file, key_file)
    with pytest.raises(InvalidInput, match="go together"):
        UpOptions(data_dir=tmp_path / "node", tls_cert=cert).brought()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args))


def test_cert_set_keeps_private_copies_for_the_next_start(company: CompanyCa,
                                                          tmp_path: Path) -> None:
    data = tmp_path / "node"
    opts = UpOptions(data_dir=data)
    assert opts.brought() is None
    cert, key = company.issue([NAME])
    res = _cli("cert", "set", "--cert", str(cert), "--key", str(key), "--data-dir", str(data))
    assert res.exit_code == 0, res.output
    assert NAME in res.output
    for name in (server_tls.BROUGHT_CERT, server_tls.BROUGHT_KEY):
        assert stat.S_IMODE((data / "tls" / name).stat().st_mode) == 0o600
    brought = opts.brought()
    assert brought is not None and brought.names == (NAME,)
    assert brought.cert == data / "tls" / server_tls.BROUGHT_CERT
    assert "valid until" in _cli("cert", "show", "--data-dir", str(data)).output
    # --tls-cert/--tls-key beat what was kept, for that start
    other_cert, other_key = company.issue(["other.example.test"], stem="other")
    once = UpOptions(data_dir=data, tls_cert=other_cert, tls_key=other_key).brought()
    assert once is not None and once.names == ("other.example.test",)
    # a bad pair is refused and the kept one stays
    res = _cli("cert", "set", "--cert", str(cert), "--key", str(other_key),
               "--data-dir", str(data))
    assert res.exit_code != 0 and "not the key" in " ".join(res.output.split())
    assert opts.brought() == brought
    assert _cli("cert", "unset", "--data-dir", str(data)).exit_code == 0
    assert opts.brought() is None


# -- serving --------------------------------------------------------------------------------

@dataclass
class Served:
    port: int
    data: Path
    ca: Path  # corral's own CA
    own_fp: str  # fingerprints of the two server certificates
    brought_fp: str
    token: str


@pytest.fixture
def engine(company: CompanyCa, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The engine's API over HTTPS as `corral up` serves it with a brought certificate;
    NAME resolves to 127.0.0.1."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    data = tmp_path / "node"
    ctx = build_context(EngineSettings(data_dir=data, agent_reconnect_s=0))
    ca, cert, key = ensure_tls(data / "tls")
    brought = server_tls.check_brought(*company.issue([NAME]))
    tls = server_tls.server_context(cert, key, ca, brought)
    try:
        with serving(create_app(ctx), ssl_context_factory=lambda _c, _d: tls) as url:
            yield Served(int(url.rsplit(":", 1)[1]), data, ca, fingerprint(cert.read_bytes()),
                         fingerprint(brought.cert.read_bytes()), create_token(ctx, "admin"))
    finally:
        ctx.ops.shutdown()


def _shown(port: int, verify: ssl.SSLContext, server_name: str | None) -> str:
    """The fingerprint of the certificate the engine shows a client that asks for
    ``server_name`` (None: reaches it by IP address, as the local CLI does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            verify.wrap_socket(raw, server_hostname=server_name or "127.0.0.1") as conn:
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        return fingerprint(ssl.DER_cert_to_PEM_cert(der))


def test_clients_asking_for_its_name_get_the_brought_certificate(
        engine: Served, company: CompanyCa) -> None:
    by_name = ssl.create_default_context(cafile=str(company.pem_file))
    assert _shown(engine.port, by_name, NAME) == engine.brought_fp
    by_ip = ssl.create_default_context(cafile=str(engine.ca))
    assert _shown(engine.port, by_ip, None) == engine.own_fp
    # and the API answers through it, verified with the company's CA
    resp = httpx.get(f"https://{NAME}:{engine.port}/api/v1/health", verify=by_name, timeout=10)
    assert resp.status_code == 200


def test_agents_keep_the_engines_own_certificate_whatever_url_they_use(
        engine: Served) -> None:
    """An agent joined with https://NAME:PORT asks for ENGINE_SNI and trusts corral's CA
    only: the reporter (http.client) and the join (httpx) both verify."""
    agent_tls = engine_client_context(cafile=str(engine.ca))
    assert _shown(engine.port, agent_tls, NAME) == engine.own_fp
    conn = http.client.HTTPSConnection(NAME, engine.port, timeout=10, context=agent_tls)
    try:
        conn.request("GET", "/api/v1/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    resp = httpx.get(f"https://{NAME}:{engine.port}/api/v1/health", verify=agent_tls, timeout=10)
    assert resp.status_code == 200
    # the name agents ask for is never given the brought certificate, nor trusted elsewhere
    with pytest.raises(ssl.SSLCertVerificationError):
        _shown(engine.port, ssl.create_default_context(cafile=str(engine.ca)), NAME)
    assert ENGINE_SNI.endswith(".invalid")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(paths, "USER_CONFIG", tmp_path / "home" / ".config" / "corral" /
                        "client.json")
    monkeypatch.setattr(paths, "DEFAULT_DATA_DIR", tmp_path / "no-node")
    return tmp_path / "home"


def test_a_remote_added_with_the_company_ca_works(engine: Served, company: CompanyCa,
                                                  home: Path) -> None:
    url = f"https://{NAME}:{engine.port}"
    res = _cli("remote", "add", "corp", url, "--ca", str(company.pem_file),
               "--token", engine.token)
    assert res.exit_code == 0, res.output
    res = _cli("--remote", "corp", "status", "-o", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["data_dir"] == str(engine.data)
    saved = remotes.get("corp")
    assert saved.ca_pem == company.pem_file.read_text()
    assert saved.fingerprint == fingerprint(saved.ca_pem)


def test_without_the_right_ca_the_remote_is_refused(engine: Served, company: CompanyCa,
                                                    home: Path) -> None:
    url = f"https://{NAME}:{engine.port}"
    # the system's CAs do not hold the company's: refused, nothing saved
    res = _cli("remote", "add", "corp", url, "--system-ca", "--token", engine.token)
    assert res.exit_code != 0 and "does not verify" in " ".join(res.output.split())
    # pinning corral's own CA, as the default does, does not pass the brought certificate
    fp = fingerprint(engine.ca.read_text())
    res = _cli("remote", "add", "corp", url, "--accept-fingerprint", fp, "--token",
               engine.token)
    assert res.exit_code != 0 and "does not verify" in " ".join(res.output.split())
    assert remotes.load().remotes == {}
    # by IP address, the default (pinned to corral's CA) works as before
    res = _cli("remote", "add", "corp", f"https://127.0.0.1:{engine.port}",
               "--accept-fingerprint", fp, "--token", engine.token)
    assert res.exit_code == 0, res.output


def test_system_ca_trusts_what_the_system_trusts(engine: Served, company: CompanyCa,
                                                 home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(company.pem_file))  # as if installed system-wide
    url = f"https://{NAME}:{engine.port}"
    res = _cli("remote", "add", "corp", url, "--system-ca", "--token", engine.token)
    assert res.exit_code == 0, res.output
    assert remotes.get("corp").ca_pem is None
    assert _cli("--remote", "corp", "status", "-o", "json").exit_code == 0
