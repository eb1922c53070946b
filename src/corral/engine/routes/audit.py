"""/api/v1/audit: the audit log (admins), and the check of its hash chain."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query

from corral.api.audit import AuditEntry, AuditVerify
from corral.engine.context import EngineContext
from corral.engine.routes.deps import context, need
from corral.engine.services import audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditEntry], dependencies=need("audit.read"))
def list_audit(
    since: datetime | None = Query(None, description="Only records from this time on "
                                   "(ISO 8601, e.g. 2026-01-31T12:00:00Z)"),
    user: str | None = Query(None, max_length=63, description="Only this user's"),
    project: str | None = Query(None, max_length=63,
                                description="Only requests made in this project"),
    action: str | None = Query(None, max_length=63,
                               description="Only this action (vm.delete, login), or a "
                               "prefix such as vm.*"),
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=1, description="The next page: the records before "
                               "this seq (the last seq of a page)"),
    ctx: EngineContext = Depends(context),
) -> list[AuditEntry]:
    """Newest first: mutating requests (refused ones too), logins and logouts; page on
    with ``before``."""
    return audit.listing(ctx, since=since, user=user, project=project, action=action,
                         limit=limit, before=before)


@router.get("/verify", response_model=AuditVerify, dependencies=need("audit.read"))
def verify_audit(ctx: EngineContext = Depends(context)) -> AuditVerify:
    """Check the hash chain of every kept record: ``ok`` false names the first broken seq
    (a record edited, removed or reordered)."""
    return audit.verify(ctx)
