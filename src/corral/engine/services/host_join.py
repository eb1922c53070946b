"""Hosts join with a one-time token and leave with a certificate of the engine's CA.

A join token (corral.pki.join_token) names the CA's fingerprint, which the joining host
checks before it sends anything; the engine keeps only the secret's SHA-256, and the token
works once, before it expires. The
engine then knows a host by its certificate's fingerprint (``hosts.cert_fingerprint``).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from urllib.parse import urlsplit

import sqlalchemy as sa

from corral.api.cluster import JoinAnswer, JoinRequest, JoinToken
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, utcnow
from corral.engine.db.models import JoinToken as JoinTokenRow
from corral.engine.tls import ensure_ca, ensure_engine_client, sign_host
from corral.errors import Conflict, InvalidInput, Unauthorized
from corral.httpserve import hash_token
from corral.pki import fingerprint, join_token, split_join_token

HOST_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def ca_fingerprint(ctx: EngineContext) -> str:
    ensure_ca(ctx.settings.tls_dir)
    return fingerprint((ctx.settings.tls_dir / "ca.pem").read_bytes())


def create_token(ctx: EngineContext, ttl_s: int = 3600) -> JoinToken:
    secret = secrets.token_urlsafe(32)
    expires = utcnow() + dt.timedelta(seconds=ttl_s)
    with ctx.db.session() as s:
        s.add(JoinTokenRow(token_hash=hash_token(secret), expires_at=expires))
    fp = ca_fingerprint(ctx)
    return JoinToken(token=join_token(fp, secret), expires_at=expires, ca_fingerprint=fp)


def validate_host_name(name: str) -> str:
    if not HOST_NAME_RE.fullmatch(name) or len(name) > 63:
        raise InvalidInput(f"host name {name!r} must be a DNS name of at most 63 characters "
                           "(letters, digits, '-' and '.')", field="name")
    return name


def _validate_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username:
        raise InvalidInput("url must be https://ADDRESS:PORT, where the engine reaches the "
                           "agent", field="url")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise InvalidInput(f"url has a bad port: {exc}", field="url") from None
    return url.rstrip("/")


def join(ctx: EngineContext, req: JoinRequest) -> JoinAnswer:
    """Spend the token, sign the host's CSR and record the host (``down`` until its agent
    says hello). A wrong, used or expired token is a 401 and changes nothing."""
    fp, secret = split_join_token(req.token)
    name = validate_host_name(req.name)
    url = _validate_url(req.url)
    tdir = ctx.settings.tls_dir
    if fp != ca_fingerprint(ctx):
        raise Unauthorized("the join token names another CA: it was made by another engine")
    now = utcnow()
    with ctx.db.session() as s:
        res = s.execute(
            sa.update(JoinTokenRow)
            .where(JoinTokenRow.token_hash == hash_token(secret), JoinTokenRow.used_at.is_(None),
                   JoinTokenRow.expires_at > now)
            .values(used_at=now, used_by=name).execution_options(synchronize_session=False)
        )
        if getattr(res, "rowcount", 0) != 1:  # compare-and-swap: one join spends it
            row = s.query(JoinTokenRow).filter_by(token_hash=hash_token(secret)).one_or_none()
            if row is None:
                raise Unauthorized("unknown join token")
            if row.used_at is not None:
                raise Unauthorized(f"this join token was already used (by host {row.used_by})")
            raise Unauthorized(f"this join token expired at {row.expires_at:%Y-%m-%d %H:%M:%S} "
                               "UTC: make a new one with `corral host token`")
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is not None and host.cert_fingerprint is not None:
            raise Conflict(f"host {name} is already a member; to join it again, "
                           f"`corral host remove {name}` first", field="name")
        if s.query(Host).filter(Host.url == url, Host.name != name).first() is not None:
            raise Conflict(f"another host is already reached at {url}", field="url")
        cert = sign_host(tdir, req.csr, name).decode()
        if host is None:
            host = Host(name=name, url=url, status="down", facts={})
            s.add(host)
        host.url, host.cert_fingerprint = url, fingerprint(cert)
        s.flush()
        host_id = host.id
    ctx.forget_agent(host_id)
    engine_pem, _ = ensure_engine_client(tdir)
    return JoinAnswer(certificate=cert, ca=(tdir / "ca.pem").read_text(),
                      engine_certificate=engine_pem.read_text())


def host_by_certificate(ctx: EngineContext, cert_pem: str) -> str:
    """The id of the registered host this client certificate was issued to, or 401: a
    removed host's certificate matches none (its removal revoked it)."""
    fp = fingerprint(cert_pem)
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(cert_fingerprint=fp).one_or_none()
        if host is None:
            raise Unauthorized("this certificate belongs to no host of this cluster "
                               "(removed, or never joined)")
        return host.id
