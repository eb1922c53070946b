"""Interactive serial console over the API's WebSocket (raw terminal, Ctrl-] leaves)."""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import threading
import tty
from urllib.parse import quote

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from corral.client import Client
from corral.errors import Unavailable

ESCAPE = b"\x1d"  # Ctrl-]


def attach_console(c: Client, name: str) -> None:
    url = c.url.replace("https://", "wss://").replace("http://", "ws://")
    ctx = c.tls if url.startswith("wss") else None  # a remote's pinned CA included
    try:
        query = f"?project={quote(c.project)}" if c.project else ""
        ws = connect(f"{url}/api/v1/vms/{name}/console{query}", ssl=ctx,
                     additional_headers={"Authorization": f"Bearer {c.token}"})
    except (OSError, ConnectionClosed) as exc:
        raise Unavailable(f"cannot open the console of {name}: {exc}") from exc
    interactive = sys.stdin.isatty()
    print(f"Connected to {name}'s serial console; press Ctrl-] to leave.", file=sys.stderr)
    saved = termios.tcgetattr(sys.stdin) if interactive else None
    done = threading.Event()

    def down() -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            for msg in ws:
                os.write(sys.stdout.fileno(), msg if isinstance(msg, bytes) else msg.encode())
        done.set()

    threading.Thread(target=down, daemon=True).start()
    try:
        if interactive:
            tty.setraw(sys.stdin)
        while not done.is_set():
            data = os.read(sys.stdin.fileno(), 1024)
            if not data or ESCAPE in data:
                break
            ws.send(data)
    except (ConnectionClosed, OSError):
        pass
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
        ws.close()
        print("\r\nDisconnected.", file=sys.stderr)
