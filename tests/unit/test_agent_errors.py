"""The agent client keeps httpx's two kinds of failure apart: no answer (transport errors:
``AgentUnreachable``, ``AgentTimeout``) and an answer that is an error (rebuilt from its code).
The agent is an ``httpx.MockTransport``: no sockets, no waiting."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from corral import errors
from corral.engine.agent_client import AgentClient
from corral.errors import AgentTimeout, AgentUnreachable, CorralError, HostError, NotFound

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler) -> AgentClient:
    return AgentClient("http://agent.test:8", reconnect_s=0,
                       transport=httpx.MockTransport(handler))


def _raises(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)
    return handler


def _answers(status: int, body: object = None, text: str | None = None) -> Handler:
    def handler(_request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)
    return handler


def test_the_tree() -> None:
    assert issubclass(AgentTimeout, AgentUnreachable)
    assert issubclass(AgentUnreachable, HostError)
    for cls in (AgentUnreachable, AgentTimeout):  # they survive the trip engine → client
        assert type(errors.from_dict(cls("x").to_dict())) is cls


def test_connect_refused_is_unreachable() -> None:
    with pytest.raises(AgentUnreachable, match=r"agent at .* unreachable") as exc:
        _client(_raises(httpx.ConnectError)).domains()
    assert not isinstance(exc.value, AgentTimeout)
    assert isinstance(exc.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("exc_type", [httpx.ReadTimeout, httpx.ConnectTimeout,
                                      httpx.WriteTimeout, httpx.PoolTimeout])
def test_a_timeout_is_agent_timeout(exc_type: type[httpx.TimeoutException]) -> None:
    with pytest.raises(AgentTimeout, match="did not answer GET /v1/domains in time") as exc:
        _client(_raises(exc_type)).domains()
    assert exc.value.status == 504
    assert isinstance(exc.value.__cause__, exc_type)


@pytest.mark.parametrize("exc_type", [httpx.ReadError, httpx.RemoteProtocolError,
                                      httpx.WriteError])
def test_other_transport_errors_are_unreachable(exc_type: type[httpx.TransportError]) -> None:
    with pytest.raises(AgentUnreachable) as exc:
        _client(_raises(exc_type)).act("vm1", "start")
    assert not isinstance(exc.value, AgentTimeout)


def _answered(handler: Handler) -> CorralError:
    with pytest.raises(CorralError) as exc:
        _client(handler).domains()
    assert not isinstance(exc.value, AgentUnreachable), "it answered: not a transport error"
    return exc.value


def test_an_answered_500_is_not_unreachable() -> None:
    err = _answered(_answers(500, {"error": {"code": "host_error", "message": "virsh broke"}}))
    assert type(err) is HostError
    assert err.message == "virsh broke"


def test_a_bare_500_is_a_host_error() -> None:
    err = _answered(_answers(500, text="Internal Server Error"))
    assert type(err) is HostError
    assert "HTTP 500" in err.message and "Internal Server Error" in err.message


def test_answered_codes_come_back_as_their_class() -> None:
    assert type(_answered(_answers(404, {"error": {"code": "not_found", "message": "no"}}))) \
        is NotFound


def test_an_answered_unreachable_code_is_not_a_transport_error() -> None:
    # Whatever code an agent sends, it did answer: only our own transport may say otherwise.
    err = _answered(_answers(502, {"error": {"code": "agent_timeout", "message": "x"}}))
    assert type(err) is HostError


def test_a_body_that_is_not_json_is_a_host_error() -> None:
    err = _answered(_answers(200, text="<html>"))
    assert type(err) is HostError
    assert "not JSON" in err.message
