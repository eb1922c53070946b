"""Reading /api/v1/events (Server-Sent Events) in tests: the operation events, up to the one
a test waits for."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any


def operation_events(lines: Iterator[str], until_id: str,
                     deadline: float) -> list[dict[str, Any]]:
    """The operation events read from the stream's ``lines`` until the one of operation
    ``until_id`` (the last); fails past ``deadline`` (time.monotonic) or at the stream's end."""
    seen: list[dict[str, Any]] = []
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "operation":
            event = json.loads(line.removeprefix("data: "))
            seen.append(event)
            if event["data"]["id"] == until_id:
                return seen
        assert time.monotonic() < deadline, f"no event for operation {until_id} in time"
    raise AssertionError("the stream ended")
