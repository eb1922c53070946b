"""The engine's client of an agent's HTTP API; agent errors come back as corral errors
(corral.engine.agent_errors: no answer apart from an answered error)."""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx

from corral.engine.agent_calls.domains import DomainCalls
from corral.engine.agent_calls.host import HostCalls
from corral.engine.agent_calls.images import ImageCalls
from corral.engine.agent_calls.migration import MigrationCalls
from corral.engine.agent_calls.networks import NetworkCalls
from corral.engine.agent_calls.pools import PoolCalls
from corral.engine.agent_calls.ports import PortCalls
from corral.engine.agent_calls.vm_files import VmFileCalls
from corral.engine.agent_errors import answered_error, transport_errors
from corral.errors import AgentUnreachable, HostError

# An agent restarting (the engine restarts one that died at once) refuses connections for
# a few seconds; a refused connection sent nothing, so any request may be tried again.
RECONNECT_S = 15.0


class AgentClient(DomainCalls, NetworkCalls, PoolCalls, ImageCalls, PortCalls, HostCalls,
                  MigrationCalls, VmFileCalls):
    """One typed method per agent route (the mixins of corral.engine.agent_calls).

    ``tls``: the engine's side of mutual TLS (corral.engine.tls.agent_ssl_context): its CA
    and client certificate. ``transport``: what carries the requests (tests pass
    ``httpx.MockTransport`` or an in-process agent app); the network when None."""

    def __init__(self, url: str, tls: ssl.SSLContext | None = None, timeout: float = 60.0,
                 reconnect_s: float = RECONNECT_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self.reconnect_s = reconnect_s
        self._http = httpx.Client(base_url=url, verify=tls if tls is not None else True,
                                  timeout=timeout, transport=transport)

    def _request(self, method: str, path: str, *, json: Any = None,
                 timeout: float | None = None, text: bool = False,
                 reconnect: bool = True) -> Any:
        """``reconnect``: wait up to ``reconnect_s`` for an agent that refuses connections."""
        deadline = time.monotonic() + (self.reconnect_s if reconnect else 0.0)
        delay = 0.1
        while True:
            try:
                with transport_errors(self.url, f"{method} {path}"):
                    resp = self._http.request(
                        method, path, json=json,
                        timeout=timeout if timeout is not None else self._http.timeout,
                    )
                break
            except AgentUnreachable as exc:
                # Refused: nothing was sent, so any request may be tried again. Anything
                # else (a timeout above all: it may be at work on the host) is not.
                if not isinstance(exc.__cause__, httpx.ConnectError) or \
                        time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        if resp.status_code >= 400:
            raise answered_error(resp)
        try:
            return resp.text if text else resp.json()
        except ValueError as exc:
            raise HostError(f"agent at {self.url} sent a body that is not JSON for "
                            f"{method} {path}: {resp.text[:200]!r}") from exc

    def close(self) -> None:
        self._http.close()
