"""Relay of a VM's consoles: client WebSocket ↔ engine ↔ agent WebSocket (mutual TLS) ↔
libvirt's serial stream, or the VNC display on the host's loopback. A VM on another host of
a cluster is reached the same way: only its host's agent talks to its console."""

from __future__ import annotations

import asyncio
import contextlib

import websockets
from fastapi import WebSocket, WebSocketDisconnect

from corral.engine.access import DEFAULT_PROJECT
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Vm
from corral.engine.projects import full_name, project_of
from corral.engine.services import console_tickets
from corral.engine.services.auth import authenticate
from corral.errors import CorralError, Forbidden, Unauthorized
from corral.httpserve import client_bytes

AGENT_PATHS: dict[console_tickets.Kind, str] = {"serial": "console", "vnc": "vnc"}


def _agent_of(ctx: EngineContext, ws: WebSocket, name: str,
              kind: console_tickets.Kind = "serial") -> str | None:
    """The agent URL of the VM's host; None: no such VM (``name``: its full name). The
    client shows an API
    token (``Authorization: Bearer``, as every route takes it) or a console ticket
    (``?ticket=``, for browsers); no bare token, and no token in the URL, where logs keep
    it. Blocking (database)."""
    ticket = ws.query_params.get("ticket")
    if ticket is not None:
        console_tickets.redeem(ticket, name, kind)
    else:
        scheme, _, secret = ws.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("send Authorization: Bearer TOKEN, or ?ticket= from "
                               f"POST /api/v1/vms/{name}/console-ticket")
        who = authenticate(ctx, secret.strip())
        project = project_of(name)
        if not who.access.sees(project):
            return None  # as if there were no such VM (names do not leak)
        if not who.access.may("vm.console", project):  # as POST .../console-ticket declares
            raise Forbidden(f"no permission vm.console in project {project}",
                            permission="vm.console")
    with ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name=name).one_or_none()
        host = s.get(Host, vm.host_id) if vm and vm.host_id else None
        return None if vm is None or host is None else host.url


async def proxy_console(ws: WebSocket, name: str, kind: console_tickets.Kind = "serial") -> None:
    """``name``: the path's; ``?project=`` names the VM's project, as on every VM route."""
    ctx: EngineContext = ws.app.state.ctx
    try:  # off the event loop, as sync routes are
        name = full_name(ws.query_params.get("project") or DEFAULT_PROJECT, name)
        agent = await asyncio.to_thread(_agent_of, ctx, ws, name, kind)
    except CorralError as exc:
        await ws.close(code=4403 if isinstance(exc, Forbidden) else 4401, reason=exc.message)
        return
    if agent is None:
        await ws.close(code=4404, reason=f"VM {name} not found")
        return
    await ws.accept()
    agent_url = agent.replace("http", "ws", 1) + f"/v1/domains/{name}/{AGENT_PATHS[kind]}"
    tls = ctx.agent_tls() if agent_url.startswith("wss:") else None  # mutual TLS, as calls
    try:
        upstream = await websockets.connect(agent_url, ssl=tls, max_size=None,
                                            open_timeout=10, close_timeout=5)
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
