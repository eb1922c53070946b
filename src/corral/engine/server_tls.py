"""The engine's HTTPS server: TLS 1.2 or newer, and a certificate an admin brings.

By default the engine shows the certificate its own CA makes at each start
(corral.engine.tls.ensure_tls); CLIs pin that CA (`corral remote add`). An admin may bring
one from a public or company CA instead (`corral up --tls-cert F --tls-key F`, or kept in
DATA_DIR/tls by `corral cert set` for every later start): it is shown to clients that ask
for one of its DNS names (TLS SNI: browsers, and CLIs that reach the engine by that name).
Everyone else still gets corral's own: agents (they ask for corral.pki.ENGINE_SNI and trust
corral's CA only), and clients that reach the engine by an IP address (they send no name),
as the local CLI does (https://127.0.0.1:PORT). Client certificates (agents') are checked
against corral's CA on either.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from corral.errors import InvalidInput
from corral.node.paths import write_private
from corral.pki import ENGINE_SNI

MIN_TLS = ssl.TLSVersion.TLSv1_2
BROUGHT_CERT, BROUGHT_KEY = "brought.pem", "brought.key"  # in DATA_DIR/tls: `corral cert set`


@dataclass(frozen=True)
class Brought:
    """A certificate an admin brought, checked: its files, DNS names and end of validity."""

    cert: Path
    key: Path
    names: tuple[str, ...]
    not_after: dt.datetime

    def covers(self, server_name: str) -> bool:
        """Whether ``server_name`` (a client's SNI) is one of its names (``*.`` wildcards
        match one label, as RFC 6125 says)."""
        host = server_name.lower().rstrip(".")
        for name in (n.lower() for n in self.names):
            if host == name:
                return True
            if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
                return True
        return False


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field=field) from exc


def check_brought(cert: Path, key: Path) -> Brought:
    """The certificate (PEM, the server's first, then its chain) and key (PEM, not
    encrypted) an admin brought, or a 422 that says what is wrong with them."""
    cert_pem, key_pem = _read(cert, "tls_cert"), _read(key, "tls_key")
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError as exc:
        raise InvalidInput(f"{cert} holds no PEM certificate ({exc})", field="tls_cert") from exc
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # a passphrase: nobody is there to type it at start
        raise InvalidInput(f"{key} is encrypted: the engine starts unattended, so give it "
                           "the key without a passphrase (`openssl pkey -in KEY -out NEW`)",
                           field="tls_key") from exc
    except ValueError as exc:
        raise InvalidInput(f"{key} holds no PEM private key ({exc})", field="tls_key") from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise InvalidInput(f"the key in {key} is not the key of the certificate in {cert} "
                           "(the certificate must come first in its file)", field="tls_key")
    now = dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        raise InvalidInput(f"the certificate in {cert} expired on "
                           f"{leaf.not_valid_after_utc:%Y-%m-%d}", field="tls_cert")
    if leaf.not_valid_before_utc > now:
        raise InvalidInput(f"the certificate in {cert} is valid only from "
                           f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC", field="tls_cert")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    if not names:
        raise InvalidInput(f"the certificate in {cert} names no DNS name (subjectAltName): "
                           "it is shown to clients that reach the engine by one of its names",
                           field="tls_cert")
    try:
        _context(cert, key)  # what OpenSSL itself makes of them (a key type it refuses, ...)
    except ssl.SSLError as exc:
        raise InvalidInput(f"{cert} and {key} are not usable for TLS: {exc}",
                           field="tls_cert") from exc
    return Brought(cert, key, names, leaf.not_valid_after_utc)


def stored(tls_dir: Path) -> tuple[Path, Path] | None:
    """The certificate and key `corral cert set` kept, if any."""
    cert, key = tls_dir / BROUGHT_CERT, tls_dir / BROUGHT_KEY
    return (cert, key) if cert.exists() and key.exists() else None


def store(tls_dir: Path, cert: Path, key: Path) -> Brought:
    """Check them, then keep copies (owner-only) that every later start of the engine shows."""
    check_brought(cert, key)
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(tls_dir / BROUGHT_KEY, key.read_bytes())
    write_private(tls_dir / BROUGHT_CERT, cert.read_bytes())
    return check_brought(tls_dir / BROUGHT_CERT, tls_dir / BROUGHT_KEY)


def forget(tls_dir: Path) -> bool:
    """Remove what `corral cert set` kept (True if there was something)."""
    found = stored(tls_dir) is not None
    for name in (BROUGHT_CERT, BROUGHT_KEY):
        (tls_dir / name).unlink(missing_ok=True)
    return found


def _context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_TLS
    # No TLS 1.3 session tickets: one arriving just after the handshake is read by a
    # WebSocket client's reader thread while its writer sends on the same TLS connection
    # (websockets' sync client, the CLI's console), which OpenSSL does not allow; a run of
    # the suite died of it in ssl.send. Clients reconnect with a full handshake instead.
    ctx.num_tickets = 0
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:  # agents show a client certificate of this CA; others show none
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def server_context(cert: Path, key: Path, ca: Path,
                   brought: Brought | None = None) -> ssl.SSLContext:
    """The engine's TLS server (uvicorn's ``ssl_context_factory``): TLS 1.2 or newer, its
    own certificate, or ``brought`` for clients that ask for one of its names."""
    ctx = _context(cert, key, ca)
    if brought is not None:
        theirs = _context(brought.cert, brought.key, ca)  # the same checks of client certs

        def pick(conn: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            if server_name and server_name != ENGINE_SNI and brought.covers(server_name):
                conn.context = theirs

        ctx.sni_callback = pick
    return ctx
