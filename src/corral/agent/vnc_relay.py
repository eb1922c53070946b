"""Bytes both ways between a WebSocket (the engine's, over mutual TLS) and a running
domain's VNC display, which listens on this host's loopback only: the display is never
reachable from the network, only through the agent."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

from fastapi import WebSocket

from corral.agent.hypervisor import Hypervisor
from corral.errors import CorralError
from corral.httpserve import client_bytes

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 10.0
CHUNK = 64 << 10


def vnc_address(displays: list[dict[str, object]]) -> tuple[str, int] | None:
    """Where to reach the domain's VNC display from this host: its loopback address and
    port; None when it has none (graphics none, or no port yet). A display that listens on
    the wildcard is reached on loopback too; one on another address is not relayed (it
    would be reachable from outside anyway, and is none of ours)."""
    for shown in displays:
        port = shown.get("port")
        if shown.get("type") != "vnc" or not isinstance(port, int) or port <= 0:
            continue
        listen = str(shown.get("listen") or "127.0.0.1")
        try:
            address = ipaddress.ip_address(listen)
        except ValueError:
            return None
        if address.is_loopback:
            return listen, port
        if address.is_unspecified:
            return ("::1" if address.version == 6 else "127.0.0.1"), port
        return None
    return None


async def relay_vnc(ws: WebSocket, hv: Hypervisor, name: str) -> None:
    """Accepts ``ws`` and relays it to ``name``'s display; closes it (4409) when the domain
    does not run or has no display, so the client knows to try again later."""
    try:
        target = vnc_address(await asyncio.to_thread(hv.graphics, name))
    except CorralError as exc:
        await ws.close(code=4409, reason=exc.message[:120])
        return
    if target is None:
        await ws.close(code=4409, reason=f"VM {name} has no VNC display on loopback")
        return
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*target),
                                                CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        await ws.close(code=4502, reason=f"VNC of {name}: {exc}"[:120])
        return
    await ws.accept()

    async def display_to_client() -> None:
        while data := await reader.read(CHUNK):
            await ws.send_bytes(data)

    async def client_to_display() -> None:
        async for data in client_bytes(ws):
            writer.write(data)
            await writer.drain()

    # Either side ending ends the relay; the other is cancelled and awaited.
    tasks = [asyncio.create_task(display_to_client()), asyncio.create_task(client_to_display())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for failed in results:
            if isinstance(failed, Exception):
                log.debug("VNC of %s: %s", name, failed)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        with contextlib.suppress(Exception):
            await ws.close()
