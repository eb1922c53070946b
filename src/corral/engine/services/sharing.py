"""Sharing an image or a network with every project (`corral image share`): the others may
read it and use it (create VMs from it, attach NICs to it), not change or delete it."""

from __future__ import annotations

from typing import Any

from corral.engine.context import EngineContext
from corral.engine.db.models import Image, Network
from corral.errors import NotFound

_KINDS: dict[str, type[Any]] = {"image": Image, "network": Network}


def set_shared(ctx: EngineContext, kind: str, name: str, shared: bool) -> bool:
    """Share (or stop sharing) the image or network ``name``; what it is now. VMs of other
    projects that use it already keep it."""
    with ctx.db.session() as s:
        row = s.query(_KINDS[kind]).filter_by(name=name).one_or_none()
        if row is None:
            raise NotFound(f"{kind} {name} not found", field="name")
        row.shared = shared
    ctx.bus.publish(kind, {"name": name, "shared": shared})
    return shared
