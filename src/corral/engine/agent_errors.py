"""How the engine reads what went wrong with a call to an agent, for AgentClient and for the
streamed calls that bypass its ``_request`` (corral.engine.agent_calls.streams).

Two kinds, as httpx draws them: no answer (httpx's transport errors) is ``AgentUnreachable``
(``AgentTimeout`` when it ran out of time); an answer that is an error is rebuilt from the
code the agent sent. Only the first may make the engine doubt a host is alive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from corral import errors
from corral.errors import AgentTimeout, AgentUnreachable, HostError


@contextlib.contextmanager
def transport_errors(url: str, what: str) -> Iterator[None]:
    """httpx's errors of ``what`` (``GET /v1/...``) as corral's: no answer, no time, or an
    answer that cannot be read."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise AgentTimeout(f"agent at {url} did not answer {what} in time: {exc!r}") from exc
    except httpx.TransportError as exc:
        raise AgentUnreachable(f"agent at {url} unreachable ({what}): {exc!r}") from exc
    except httpx.HTTPError as exc:  # it answered, but not in a way we can read
        raise HostError(f"agent at {url} ({what}): {exc}") from exc


def answered_error(resp: httpx.Response) -> errors.CorralError:
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
