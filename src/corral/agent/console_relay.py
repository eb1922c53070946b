"""Bytes both ways between a WebSocket and a domain's serial console (a libvirt stream).

The guest-to-client side blocks in libvirt's stream recv, so it runs on a thread of its
own: on the event loop's default executor, a few open consoles would take every worker
and stall each `asyncio.to_thread` call of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from fastapi import WebSocket

from corral.agent.hypervisor import Hypervisor
from corral.httpserve import client_bytes

log = logging.getLogger(__name__)
SEND_TIMEOUT = 10.0  # a client that reads nothing for this long is dropped


async def relay_console(ws: WebSocket, hv: Hypervisor, name: str) -> None:
    stream = await asyncio.to_thread(hv.open_console, name)
    loop = asyncio.get_running_loop()
    closed = threading.Event()
    guest_done = asyncio.Event()

    def guest_to_client() -> None:
        try:
            while not closed.is_set():
                data = stream.recv(4096)
                if not data or isinstance(data, int):
                    break  # end of stream (0 bytes) or an error code
                asyncio.run_coroutine_threadsafe(ws.send_bytes(bytes(data)), loop) \
                    .result(SEND_TIMEOUT)
        except Exception as exc:  # the stream was aborted, or the client went away
            if not closed.is_set():
                log.debug("console of %s: %s", name, exc)
        finally:
            closed.set()
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(guest_done.set)

    threading.Thread(target=guest_to_client, name=f"console-{name}", daemon=True).start()
    client = asyncio.create_task(_client_to_guest(ws, stream))
    guest = asyncio.create_task(guest_done.wait())
    try:
        await asyncio.wait([client, guest], return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.set()
        for task in (client, guest):
            task.cancel()
        await asyncio.gather(client, guest, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(stream.abort)  # wakes the thread's recv
        with contextlib.suppress(Exception):
            await ws.close()


async def _client_to_guest(ws: WebSocket, stream: Any) -> None:
    async for data in client_bytes(ws):
        await asyncio.to_thread(stream.send, data)
