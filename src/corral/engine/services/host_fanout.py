"""Setting one thing up on several hosts: all of them, or none."""

from __future__ import annotations

import contextlib
from typing import Any

from corral.engine.context import EngineContext
from corral.engine.operations import OpContext
from corral.errors import CorralError


def put_on_hosts(ctx: EngineContext, op: OpContext, path: str,
                 bodies: list[tuple[str, dict[str, Any]]], doing: str) -> dict[str, Any]:
    """PUT ``path`` on each host with its body, one after another (progress 10-90 %). When a
    host fails, every host asked so far (that one included: it may have done part) gets a
    DELETE of ``path``, and the error goes on. The last host's answer."""
    touched: list[str] = []
    answer: dict[str, Any] = {}
    try:
        for i, (host_id, body) in enumerate(bodies):
            op.progress(10 + 80 * i // len(bodies), f"{doing} on host {i + 1}")
            touched.append(host_id)
            answer = ctx.agent(host_id).call("PUT", path, json=body, timeout=120)
    except CorralError:
        for host_id in reversed(touched):
            with contextlib.suppress(CorralError):
                ctx.agent(host_id).call("DELETE", path, timeout=120)
        raise
    return answer
