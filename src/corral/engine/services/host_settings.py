"""One host: its live memory (``GET /api/v1/hosts/{name}``) and its settings (``PATCH``,
`corral host set`): KSM on or off, an operation under the host's lock.

KSM is the host kernel's state, not a row: what `host show` prints is what the kernel does
now (a host that reboots comes back with KSM off, as the kernel starts it)."""

from __future__ import annotations

import contextlib

from corral.api import Operation
from corral.api.hosts import HostDetail, HostMemory, HostPatch
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.engine.operations import OpContext
from corral.engine.services import host_facts
from corral.engine.services.hosts import to_api
from corral.errors import HostError, InvalidInput, NotFound


def _find(ctx: EngineContext, name: str) -> Host:
    with ctx.db.session() as s:
        host = s.query(Host).filter_by(name=name).one_or_none()
        if host is None:
            raise NotFound(f"host {name} not found (`corral host list`)", field="name")
        s.expunge(host)
        return host


def show(ctx: EngineContext, name: str) -> HostDetail:
    host = _find(ctx, name)
    memory = None
    # A host that does not answer is still shown, from what the engine knows.
    with contextlib.suppress(HostError):
        memory = HostMemory.model_validate(ctx.agent(host.id).memory().model_dump())
    with ctx.db.session() as s:
        allocated = host_facts.allocations(s, host.id).get(host.id)
    return HostDetail(**to_api(host, allocated).model_dump(), memory=memory)


def patch(ctx: EngineContext, name: str, req: HostPatch) -> Operation:
    if req.ksm is None:
        raise InvalidInput("nothing to change: give ksm", field="ksm")
    host = _find(ctx, name)
    return ctx.ops.submit("host.update", {"hosts": [name]}, {"host_id": host.id,
                                                           "ksm": req.ksm},
                          [f"host:{name}"], host_id=host.id)


def execute(ctx: EngineContext, op: OpContext) -> None:
    on = bool(op.params["ksm"])
    op.progress(30, f"turning KSM {'on' if on else 'off'}")
    memory = ctx.agent(op.params["host_id"]).set_ksm(on)
    op.progress(100, f"KSM {'on' if on else 'off'}; it spares {memory.ksm_saved_mib} MiB now")


def register(ctx: EngineContext) -> None:
    ctx.ops.register("host.update", lambda op: execute(ctx, op))
