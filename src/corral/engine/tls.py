"""The engine's CA (made on first start, kept) and what it signs: the engine's server
certificate (remade at each start), its client certificate for agents, and hosts' certificates.

Engine and agents authenticate each other with these (mutual TLS): the agent accepts only
the engine's client certificate (CN ``corral engine``, a name no host can have), the engine
only a certificate its CA issued to a registered host (by fingerprint, so removing the host
revokes it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.errors import InvalidInput
from corral.node.paths import write_private
from corral.pki import ENGINE_SNI, key_pem, load_key

_YEARS = 10
ENGINE_CN = "corral engine"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ensure_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA of this engine: made once, kept across starts (hosts' certificates hang on it)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_pem, ca_key_path = tls_dir / "ca.pem", tls_dir / "ca.key"
    if ca_pem.exists() and ca_key_path.exists():
        return x509.load_pem_x509_certificate(ca_pem.read_bytes()), load_key(ca_key_path)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral CA")])
    now = _now()
    ca_cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(ca_key_path, key_pem(ca_key))
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_cert, ca_key


def _issue(tls_dir: Path, cn: str, public_key: ec.EllipticCurvePublicKey,
           sans: list[x509.GeneralName], usages: list[x509.ObjectIdentifier]) -> bytes:
    ca_cert, ca_key = ensure_ca(tls_dir)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _local_names() -> tuple[list[str], list[str]]:
    names = ["localhost", socket.gethostname()]
    ips = {"127.0.0.1", "::1"}
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                ips.add(a.address.split("%")[0])
    return names, sorted(ips)


def ensure_tls(tls_dir: Path, extra_names: list[str] | None = None) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key); the server cert is remade at each start (this
    machine's addresses may have changed), the CA kept."""
    ensure_ca(tls_dir)
    names, ips = _local_names()
    names.append(ENGINE_SNI)  # what agents ask for (corral.pki.EngineNameContext)
    for extra in extra_names or []:
        try:
            ips.append(str(ipaddress.ip_address(extra)))
        except ValueError:
            names.append(extra)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(names)]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
    cert = _issue(tls_dir, socket.gethostname(), key.public_key(), sans,
                  [ExtendedKeyUsageOID.SERVER_AUTH])
    server_pem, server_key = tls_dir / "server.pem", tls_dir / "server.key"
    write_private(server_key, key_pem(key))
    server_pem.write_bytes(cert)
    return tls_dir / "ca.pem", server_pem, server_key


def ensure_engine_client(tls_dir: Path) -> tuple[Path, Path]:
    """(engine.pem, engine.key): the certificate the engine shows agents; kept, since agents
    pin it at join."""
    pem, key_path = tls_dir / "engine.pem", tls_dir / "engine.key"
    if not (pem.exists() and key_path.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(tls_dir, ENGINE_CN, key.public_key(), [],
                      [ExtendedKeyUsageOID.CLIENT_AUTH])
        write_private(key_path, key_pem(key))
        pem.write_bytes(cert)
    return pem, key_path


def sign_host(tls_dir: Path, csr_pem: str, name: str) -> bytes:
    """A client + server certificate for host ``name`` from its CSR: CN and the first DNS
    name are the host's name whatever the CSR says; its other names and addresses are kept
    (the engine reaches the agent at one of them)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise InvalidInput(f"not a PEM certificate signing request: {exc}", field="csr") from exc
    if not csr.is_signature_valid:
        raise InvalidInput("the CSR's signature does not match its key", field="csr")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise InvalidInput("the CSR's key must be an EC key (P-256)", field="csr")
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    try:
        asked = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        asked = x509.SubjectAlternativeName([])
    for n in asked.get_values_for_type(x509.DNSName):
        if n != name and n not in ("localhost", ENGINE_CN, ENGINE_SNI):
            sans.append(x509.DNSName(n))
    sans += [x509.IPAddress(ip) for ip in asked.get_values_for_type(x509.IPAddress)]
    return _issue(tls_dir, name, public_key, sans,
                  [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


def agent_ssl_context(tls_dir: Path) -> ssl.SSLContext:
    """How the engine calls agents: it trusts its CA only and shows its client certificate."""
    pem, key = ensure_engine_client(tls_dir)  # and the CA, on a first start
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls_dir / "ca.pem"))
    ctx.load_cert_chain(str(pem), str(key))
    return ctx
