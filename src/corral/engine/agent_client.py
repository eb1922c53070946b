"""The engine's client of an agent's HTTP API; agent errors come back as corral errors.

Two kinds, as httpx draws them: no answer (httpx's transport errors) is ``AgentUnreachable``
(``AgentTimeout`` when it ran out of time), and an answer that is an error is rebuilt from
the code the agent sent. Only the first may make the reconciler doubt a host is alive.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx

from corral import errors
from corral.engine.agent_calls.domains import DomainCalls
from corral.engine.agent_calls.host import HostCalls
from corral.engine.agent_calls.images import ImageCalls
from corral.engine.agent_calls.networks import NetworkCalls
from corral.engine.agent_calls.pools import PoolCalls
from corral.engine.agent_calls.ports import PortCalls
from corral.errors import AgentTimeout, AgentUnreachable, HostError

# An agent restarting (the engine restarts one that died at once) refuses connections for
# a few seconds; a refused connection sent nothing, so any request may be tried again.
RECONNECT_S = 15.0


class AgentClient(DomainCalls, NetworkCalls, PoolCalls, ImageCalls, PortCalls, HostCalls):
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
                resp = self._http.request(
                    method, path, json=json,
                    timeout=timeout if timeout is not None else self._http.timeout,
                )
                break
            except httpx.ConnectError as exc:
                if time.monotonic() + delay > deadline:
                    raise AgentUnreachable(f"agent at {self.url} unreachable: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except httpx.TimeoutException as exc:
                # Not retried: the request may have been sent and be at work on the host.
                raise AgentTimeout(f"agent at {self.url} did not answer {method} {path} "
                                   f"in time: {exc!r}") from exc
            except httpx.TransportError as exc:
                raise AgentUnreachable(f"agent at {self.url} unreachable: {exc!r}") from exc
            except httpx.HTTPError as exc:  # it answered, but not in a way we can read
                raise HostError(f"agent at {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            raise _answered_error(resp)
        try:
            return resp.text if text else resp.json()
        except ValueError as exc:
            raise HostError(f"agent at {self.url} sent a body that is not JSON for "
                            f"{method} {path}: {resp.text[:200]!r}") from exc

    def close(self) -> None:
        self._http.close()


def _answered_error(resp: httpx.Response) -> errors.CorralError:
    """The error an agent answered with, rebuilt from its code; never the transport kind,
    since the agent did answer (whatever code it sent)."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    body = data.get("error") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not body:
        body = {"message": f"HTTP {resp.status_code}: {resp.text[:500]}"}
    body.setdefault("code", "host_error")
    err = errors.from_dict(body)
    if isinstance(err, AgentUnreachable):
        return HostError(err.message, field=err.field, **err.details)
    return err
