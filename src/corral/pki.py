"""Certificates both sides need: keys on disk, fingerprints, and a host's signing request.

The engine's CA signs what hosts ask for (corral.engine.tls); here is only what an agent can do
without the CA: make its key and CSR, and check a certificate against a pinned fingerprint.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from corral.errors import InvalidInput


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


def fingerprint(cert_pem: bytes | str) -> str:
    """SHA-256 of the certificate's DER, lowercase hex: what users compare and pin."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    cert = x509.load_pem_x509_certificate(data)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def make_csr(name: str, addresses: list[str]) -> tuple[bytes, bytes]:
    """(key PEM, CSR PEM) for a host named ``name`` reached at ``addresses`` (IPs or names);
    the CA decides what it signs (corral.engine.tls.sign_host)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    for a in dict.fromkeys(addresses):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            sans.append(x509.DNSName(a))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName(sans), critical=False)
           .sign(key, hashes.SHA256()))
    return key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


JOIN_PREFIX = "corral-join"
_FP_RE = re.compile(r"[0-9a-f]{64}")


def join_token(ca_fp: str, secret: str) -> str:
    """A join token names the CA's fingerprint, which the joining host checks before it
    trusts the engine (as kubeadm's discovery hash), and the secret the engine checks."""
    return f"{JOIN_PREFIX}.{ca_fp}.{secret}"


def split_join_token(token: str) -> tuple[str, str]:
    """(CA fingerprint, secret) of a join token, or 422."""
    prefix, _, rest = token.strip().partition(".")
    fp, _, secret = rest.partition(".")
    if prefix != JOIN_PREFIX or not _FP_RE.fullmatch(fp) or not secret:
        raise InvalidInput(f"not a join token (expected {JOIN_PREFIX}.<CA fingerprint>.<secret>"
                           ", as `corral host token` prints it)", field="token")
    return fp, secret


# The name agents ask the engine for (TLS SNI) and check its certificate against, whatever
# address they reach it at: the engine then shows its own certificate (of the CA agents
# trust), even where it serves one an admin brought (`corral up --tls-cert`) to browsers and
# CLIs. ``.invalid`` never resolves and no public CA issues for it; the engine's CA puts it
# in no host's certificate (corral.engine.tls.sign_host).
ENGINE_SNI = "engine.corral.invalid"


class EngineNameContext(ssl.SSLContext):
    """A client context that asks for, and verifies, :data:`ENGINE_SNI` on every connection
    (http.client and httpx pass the URL's host; it is replaced here)."""

    def wrap_socket(self, sock: Any, server_side: bool = False,
                    do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                    server_hostname: str | bytes | None = None,
                    session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        return super().wrap_socket(sock, server_side, do_handshake_on_connect,
                                   suppress_ragged_eofs, ENGINE_SNI, session)

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, ENGINE_SNI, session)


def engine_client_context(*, cafile: str | None = None,
                          cadata: str | None = None) -> ssl.SSLContext:
    """How an agent verifies the engine: its CA only, the name :data:`ENGINE_SNI`, TLS 1.2+."""
    ctx = EngineNameContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=cafile, cadata=cadata)
    return ctx
