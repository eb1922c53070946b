"""Relay of a VM's serial console: client WebSocket ↔ engine ↔ agent WebSocket ↔ libvirt."""

from __future__ import annotations

import asyncio
import contextlib

import websockets
from fastapi import WebSocket, WebSocketDisconnect

from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Vm
from corral.engine.services.auth import check_token
from corral.errors import CorralError
from corral.httpserve import client_bytes


async def proxy_console(ws: WebSocket, name: str) -> None:
    ctx: EngineContext = ws.app.state.ctx
    secret = ws.headers.get("authorization", "").removeprefix("Bearer ").strip()
    secret = secret or ws.query_params.get("token", "")
    try:
        check_token(ctx, secret)
        with ctx.db.session() as s:
            vm = s.query(Vm).filter_by(name=name).one_or_none()
            host = s.get(Host, vm.host_id) if vm and vm.host_id else None
            if vm is None or host is None:
                await ws.close(code=4404, reason=f"VM {name} not found")
                return
            url, token = host.url, host.token
    except CorralError as exc:
        await ws.close(code=4401, reason=exc.message)
        return
    await ws.accept()
    agent_url = url.replace("http", "ws", 1) + f"/v1/domains/{name}/console"
    try:
        upstream = await websockets.connect(
            agent_url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None,
            open_timeout=10, close_timeout=5,
        )
        try:
            await _relay(ws, upstream)
        finally:
            try:
                await upstream.close()
            finally:
                # A close interrupted by cancellation (the server dropping the client's task)
                # must not leave the agent's console connection open until its keepalive.
                upstream.transport.abort()
    except (OSError, websockets.WebSocketException, WebSocketDisconnect):
        pass
    finally:
        with contextlib.suppress(RuntimeError):
            await ws.close()


async def _relay(ws: WebSocket, upstream: websockets.ClientConnection) -> None:
    async def down() -> None:
        async for msg in upstream:
            await ws.send_bytes(msg if isinstance(msg, bytes) else msg.encode())

    async def up() -> None:
        async for data in client_bytes(ws):
            await upstream.send(data)

    # Either side ending ends the relay; the other is cancelled and awaited, so no task
    # outlives the connection and every exception is consumed here.
    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
