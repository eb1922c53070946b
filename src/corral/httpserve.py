"""Shared HTTP plumbing of the engine and the agent: error mapping, bearer-token checks, and
what a WebSocket client sends (the console relays)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from corral.errors import CorralError, Unauthorized


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def _corral(_req: Request, exc: CorralError) -> JSONResponse:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            field, msg = "body", "request body is not valid JSON"
        body = {
            "code": "invalid_input",
            "message": f"{field}: {msg}",
            "field": field,
            "details": {"errors": [
                {"field": _field_of(tuple(e.get("loc", ()))), "message": str(e.get("msg"))}
                for e in errors
            ]},
        }
        return JSONResponse({"error": body}, status_code=422)
