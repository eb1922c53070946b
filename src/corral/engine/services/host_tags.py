"""Host tags (`corral host tag add|remove HOST TAG`): labels a VM can require of its host
(`vm create --host-tag ssd`). Adding a tag that is there, or removing one that is not,
changes nothing and is no error (PUT and DELETE are idempotent)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from corral.api import Host as HostOut
from corral.api.tags import validate_tag
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Host, Vm
from corral.engine.services import hosts
from corral.errors import NotFound


def _find(s: Session, name: str) -> Host:
    host = s.query(Host).filter_by(name=name).one_or_none()
    if host is None:
        raise NotFound(f"host {name} not found (`corral host list`)")
    return host


def set_tag(ctx: EngineContext, name: str, tag: str, present: bool) -> HostOut:
    validate_tag(tag)
    with ctx.db.session() as s:
        # The placement lock: a create placing now sees the tags before or after, not half.
        claims.serialize(s, Vm)
        host = _find(s, name)
        tags = set(host.tags or ())
        tags = tags | {tag} if present else tags - {tag}
        host.tags = sorted(tags)
        s.flush()
        return hosts.to_api(host)
