"""Typed calls of the agent's HTTP API, one method per route, grouped by resource.

Each module holds a mixin of ``corral.engine.agent_client.AgentClient`` (domains, networks,
pools, images, ports); they share ``AgentCalls``, which sends a ``corral.agent_api`` body and
reads the answer back into its model. Services call these methods, never raw paths.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from corral.agent_api import Answer
from corral.errors import HostError

A = TypeVar("A", bound=Answer)


class AgentCalls:
    url: str

    def _request(self, method: str, path: str, *, json: Any = None,
                 timeout: float | None = None, text: bool = False,
                 reconnect: bool = True) -> Any:
        raise NotImplementedError  # AgentClient: the HTTP exchange and its error tree

    def _send(self, method: str, path: str, answer: type[A], body: BaseModel | None = None, *,
              timeout: float | None = None, reconnect: bool = True) -> A:
        data = self._request(method, path, json=_dumped(body), timeout=timeout,
                             reconnect=reconnect)
        try:
            return answer.model_validate(data)
        except ValidationError as exc:
            raise self._unreadable(method, path, exc) from None

    def _send_list(self, method: str, path: str, item: type[A],
                   body: BaseModel | None = None, *,
                   timeout: float | None = None, reconnect: bool = True) -> list[A]:
        data = self._request(method, path, json=_dumped(body), timeout=timeout,
                             reconnect=reconnect)
        try:
            return TypeAdapter(list[item]).validate_python(data)  # type: ignore[valid-type]
        except ValidationError as exc:
            raise self._unreadable(method, path, exc) from None

    def _unreadable(self, method: str, path: str, exc: ValidationError) -> HostError:
        # The agent answered, with something this engine cannot read (a version skew or a
        # bug): an application error, never a sign that the host is gone.
        return HostError(f"agent at {self.url} answered {method} {path} with what this "
                         f"engine cannot read: {first_problem(exc)}")


def first_problem(exc: ValidationError) -> str:
    """What does not fit, and where: ``Field required at state``."""
    first = exc.errors()[0]
    return f"{first.get('msg')} at {'.'.join(map(str, first.get('loc', ())))}"


def _dumped(body: BaseModel | None) -> Any:
    return None if body is None else body.model_dump(mode="json")
