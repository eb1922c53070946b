"""The client certificate of a TLS connection, handed to the ASGI app as the ASGI TLS
extension says (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM): uvicorn verifies
it but does not pass it on, and the engine must know which host is calling.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - without httptools uvicorn speaks h11
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


class _WithCert:
    def __init__(self, app: ASGIApp, chain: list[str]) -> None:
        self.app, self.chain = app, chain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {"client_cert_chain": self.chain}
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class PeerCertProtocol(_Base):
    """uvicorn's HTTP protocol, one per connection, that wraps the app of a connection that
    showed a client certificate."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app = _WithCert(self.app, [ssl.DER_cert_to_PEM_cert(der)])


def client_certificate(scope: dict[str, Any] | Any) -> str | None:
    """The PEM client certificate of the request's connection, if it showed one."""
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain")
    return chain[0] if chain else None
