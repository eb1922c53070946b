"""Shared HTTP plumbing of the engine and the agent: error mapping, bearer-token checks, and
what a WebSocket client sends (the console relays)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.errors import CorralError, Unauthorized

log = logging.getLogger(__name__)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("missing bearer token (Authorization: Bearer TOKEN)")
    return secret.strip()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def client_bytes(ws: WebSocket) -> AsyncIterator[bytes]:
    """What the client sends, as bytes (text frames encoded), until it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            msg = await ws.receive()
            if msg.get("type") == "websocket.disconnect":
                return
            data = msg.get("bytes") or (msg.get("text") or "").encode()
            if data:
                yield data


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], body: object) -> M:
    """``body`` (a route's JSON body taken as ``Any``) as ``model``, refused exactly as FastAPI
    refuses a body declared with the model (the same 422). For routes whose model lives in a
    module imported on their first call, not at start (corral.agent.image_api)."""
    try:
        return model.model_validate(body, from_attributes=True)  # as FastAPI validates bodies
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]) from None


def _field_of(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]  # where it came from; the rest names the field (which may be "path")
    return ".".join(parts) or "body"


BODY_MAX = 8 << 20  # bytes of one request body (the largest, guest customize, holds ~1.4 MiB)


def _shown(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit} bytes"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {_shown(limit)}, the limit of "
                         "this route; send less")


def _too_large(exc: BodyTooLarge) -> JSONResponse:
    return JSONResponse({"error": {"code": "invalid_input", "message": exc.detail, "field": "body"}},
                        status_code=exc.status_code)


# (method, path pattern, limit in bytes or None): a route whose body may be larger than the
# default, or, None, that streams its body and bounds it itself (an image file copy).
RouteLimit = tuple[str, re.Pattern[str], int | None]


class BodyLimit:
    """ASGI middleware: a request body of more than ``limit`` bytes (or the route's own, see
    :data:`RouteLimit`) is refused (413) before the app holds it whole in memory and decodes
    it (FastAPI does both, on the event loop): at once by its Content-Length, else (chunked)
    as soon as the bytes counted pass it."""

    def __init__(self, app: ASGIApp, limit: int = BODY_MAX,
                 routes: Sequence[RouteLimit] = ()) -> None:
        self.app = app
        self.limit = limit
        self.routes = tuple(routes)

    def limit_of(self, method: str, path: str) -> int | None:
        for m, pattern, limit in self.routes:
            if m == method and pattern.fullmatch(path):
                return limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope["method"], scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
                await _too_large(BodyTooLarge(limit))(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:  # a body without Content-Length (chunked)
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)  # FastAPI lets an HTTPException through
            return message

        await self.app(scope, counted, send)


# Codes of the errors the HTTP layer itself raises (no route reached, a body it could not
# read), in corral's one error shape.
_HTTP_CODES = {400: "invalid_input", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 413: "invalid_input", 415: "invalid_input"}


def _allowed(app: FastAPI, scope: Scope) -> list[str]:
    """The methods some route of ``app`` takes at this path (Starlette's own 405 names only
    the first route's: GET and DELETE of one path are two routes)."""
    methods = [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
               if any(route.matches({**scope, "method": m})[0] == Match.FULL
                      for route in app.router.routes)]
    return [*methods, "HEAD"] if "GET" in methods else methods


def _message(error: Any) -> str:
    """What pydantic says of a field, in words for a user of the API."""
    if error.get("type") == "extra_forbidden":  # a typo, or a field of another version
        return "unknown field: this request takes no such field (check its spelling)"
    if error.get("type") == "string_too_long":
        return f"longer than {(error.get('ctx') or {}).get('max_length')} characters"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def _corral(_req: Request, exc: CorralError) -> JSONResponse:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)

    @app.exception_handler(BodyTooLarge)
    async def _body(_req: Request, exc: BodyTooLarge) -> JSONResponse:
        return _too_large(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such API path: {req.url.path}"
        if exc.status_code == 405:
            allowed = _allowed(app, req.scope)
            headers["Allow"] = ", ".join(allowed)
            message = f"{req.method} is not allowed on {req.url.path}; allowed: {headers['Allow']}"
        body: dict[str, object] = {"code": code, "message": message}
        if exc.status_code in (400, 413, 415):
            body["field"] = "body"
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _bug(req: Request, exc: Exception) -> JSONResponse:
        # A bug: the log has the traceback; the client gets corral's shape, no internals.
        log.error("%s %s failed", req.method, req.url.path, exc_info=exc)
        return JSONResponse({"error": {"code": "internal", "message": "internal error; the "
                                       "server's log has the details"}}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        msg = _message(first)
        if first.get("type") == "json_invalid":
            field, msg = "body", "request body is not valid JSON"
        body = {
            "code": "invalid_input",
            "message": f"{field}: {msg}",
            "field": field,
            "details": {"errors": [
                {"field": _field_of(tuple(e.get("loc", ()))), "message": _message(e)}
                for e in errors
            ]},
        }
        return JSONResponse({"error": body}, status_code=422)
