"""/api/v1/events: Server-Sent Events of operations, VM and host state changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from corral.engine.context import EngineContext
from corral.engine.routes.deps import authenticated, context, need

router = APIRouter(prefix="/api/v1/events", tags=["events"], dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("event.read"), response_class=StreamingResponse, responses={200: {
    "description": "Server-Sent Events: `event: TYPE` and `data: JSON` of each change",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def events(request: Request, ctx: EngineContext = Depends(context)) -> StreamingResponse:
    queue = ctx.bus.subscribe()

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: {event.type}\ndata: {event.model_dump_json()}\n\n"
        finally:
            ctx.bus.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
