"""The one exception tree of corral.

Every error carries a stable ``code``, an HTTP ``status`` and a message meant for a person.
Lower-layer errors (libvirt, subprocess, httpx) are mapped at the boundary with
``raise CorralError(...) from exc``.

As in httpx, the transport branch (``AgentUnreachable``: the agent never answered) is apart
from "the agent answered with an error" (any other code it sent back): only the first says
anything about whether a host is alive.

    CorralError (500 internal)
    ├── InvalidInput (422 invalid_input)     bad field value; ``field`` names it
    ├── NotFound (404 not_found)
    ├── Conflict (409 conflict)              duplicate name, resource in use
    │   ├── WrongState (409 wrong_state)     action not valid in the current state
    │   └── Cancelled (409 cancelled)        the operation was cancelled (``operation cancel``)
    ├── Unauthorized (401 unauthorized)
    ├── InsufficientResources (409 insufficient_resources)
    ├── HostError (502 host_error)           the agent or a host tool failed
    │   ├── HypervisorError (502 hypervisor_error)  libvirt said no
    │   └── AgentUnreachable (502 agent_unreachable)  no answer: refused, reset, lost
    │       └── AgentTimeout (504 agent_timeout)      no answer in time
    └── Unavailable (503 unavailable)        a dependency is missing or not running
"""

from __future__ import annotations

from typing import Any, ClassVar


class CorralError(Exception):
    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(CorralError):
    code = "invalid_input"
    status = 422


class NotFound(CorralError):
    code = "not_found"
    status = 404


class Conflict(CorralError):
    code = "conflict"
    status = 409


class WrongState(Conflict):
    code = "wrong_state"
    status = 409


class Cancelled(Conflict):
    """Ends an operation as ``cancelled``: raised by ``OpContext.check_cancelled``."""

    code = "cancelled"
    status = 409


class QuotaExceeded(Conflict):
    """A project's quota would be passed: the details name the quota, its limit, its use."""
    code = "quota_exceeded"


class Unauthorized(CorralError):
    code = "unauthorized"
    status = 401


class Forbidden(CorralError):
    """A valid token whose role lacks the permission the route declares."""

    code = "forbidden"
    status = 403


class RateLimited(CorralError):
    """Too many failed logins: ``details.retry_after_s`` says when to try again."""

    code = "rate_limited"
    status = 429


class InsufficientResources(CorralError):
    code = "insufficient_resources"
    status = 409


class HostError(CorralError):
    code = "host_error"
    status = 502


class HypervisorError(HostError):
    code = "hypervisor_error"
    status = 502


class AgentUnreachable(HostError):
    code = "agent_unreachable"
    status = 502


class AgentTimeout(AgentUnreachable):
    code = "agent_timeout"
    status = 504


class Unavailable(CorralError):
    code = "unavailable"
    status = 503


_BY_CODE: dict[str, type[CorralError]] = {
    cls.code: cls
    for cls in (
        CorralError, InvalidInput, NotFound, Conflict, WrongState, Cancelled, Unauthorized,
        Forbidden, RateLimited, QuotaExceeded,
        InsufficientResources, HostError, HypervisorError, AgentUnreachable, AgentTimeout,
        Unavailable,
    )
}


def from_dict(body: dict[str, Any]) -> CorralError:
    """Rebuild an error sent over HTTP (engine → client, agent → engine)."""
    cls = _BY_CODE.get(str(body.get("code", "")), CorralError)
    return cls(
        str(body.get("message", "unknown error")),
        field=body.get("field"),
        **(body.get("details") or {}),
    )
