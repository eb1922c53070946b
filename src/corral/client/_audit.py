"""The SDK's calls for the audit log (a part of corral.client.Client)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from corral.api.audit import AuditEntry, AuditVerify


class AuditApi:
    """Mixed into Client, which does the HTTP."""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def list_audit(self, *, since: datetime | None = None, user: str | None = None,
                   project: str | None = None, action: str | None = None, limit: int = 100,
                   before: int | None = None) -> list[AuditEntry]:
        """Newest first; ``action`` may be a prefix (``vm.*``); ``before``: the next page
        (the last seq of this one)."""
        params: dict[str, Any] = {k: v for k, v in {
            "since": since.isoformat() if since else None, "user": user,
            "action": action, "limit": limit, "before": before}.items() if v is not None}
        params["project"] = project  # a filter here: None sends none (not the switched one)
        return [AuditEntry.model_validate(e)
                for e in self._json("GET", "/api/v1/audit", params=params)]

    def verify_audit(self) -> AuditVerify:
        """Check the audit log's hash chain (``ok``, or the first broken seq)."""
        return AuditVerify.model_validate(self._json("GET", "/api/v1/audit/verify"))
