"""/api/v1/events: Server-Sent Events of operations, VM and host state changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from corral.api import Event
from corral.engine.context import EngineContext
from corral.engine.permissions import ALL_PROJECTS
from corral.engine.routes.deps import authenticated, caller, context, need
from corral.engine.services.auth import Principal

KEEP_ALIVE_S = 15.0
RECHECK_S = 15.0

router = APIRouter(prefix="/api/v1/events", tags=["events"], dependencies=[Depends(authenticated)])


@router.get("", dependencies=need("event.read"), response_class=StreamingResponse, responses={200: {
    "description": "Server-Sent Events: `event: TYPE` and `data: JSON` of each change",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def events(request: Request, who: Principal = Depends(caller),
                 ctx: EngineContext = Depends(context)) -> StreamingResponse:
    """What the caller may see: the events of its projects (``?project=``: of that one
    only), and those of the engine and its hosts when it reads every project."""
    return stream_for(request, who, ctx, request.query_params.get("project") or None)


def stream_for(request: Request, who: Principal, ctx: EngineContext,
               only: str | None, alive: Callable[[], bool] | None = None) -> StreamingResponse:
    """The event stream ``who`` may see (``only``: of that project); also the web UI's
    (engine/ui), which knows its caller by the session cookie. ``alive``: asked every
    RECHECK_S (in a worker thread); once false the stream ends (a session expired or
    revoked hears nothing more)."""
    queue = ctx.bus.subscribe()

    async def stream() -> AsyncIterator[str]:
        checked = time.monotonic()
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                if alive is not None and time.monotonic() - checked >= RECHECK_S:
                    if not await run_in_threadpool(alive):
                        return
                    checked = time.monotonic()
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=KEEP_ALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if not visible(who, event, only):
                    continue
                yield f"event: {event.type}\ndata: {event.model_dump_json()}\n\n"
        finally:
            ctx.bus.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def visible(who: Principal, event: Event, only: str | None = None) -> bool:
    """Whether ``who`` sees the event: one of a project where it holds event.read (``only``:
    of that project), or the engine's and its hosts' for those who read every project."""
    if event.project is None:
        return "event.read" in who.access.everywhere() and only in (None, ALL_PROJECTS)
    if only not in (None, ALL_PROJECTS) and event.project != only:
        return False
    return who.access.may("event.read", event.project)
