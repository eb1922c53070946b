"""API types of the audit log (``/api/v1/audit``): who did what, when, from where, and how
the engine answered. No record holds a request body (bodies carry passwords and user-data)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

__all__ = ["AuditEntry", "AuditVerify"]


class AuditEntry(BaseModel):
    seq: int = Field(description="Place in the chain: ascending, one per record")
    time: datetime
    user: str | None = Field(None, description="Who called (a login: the name tried); none: "
                             "no valid token, or the engine's own token")
    token_name: str | None = Field(None, description="The token shown (an API token's name, "
                                   "or session-... for a login session)")
    client: str | None = Field(None, description="The caller's address")
    project: str = Field(description="The request's ?project= (default: default)")
    action: str = Field(description="The permission the route needs (vm.delete, ...), or "
                        "login, logout and the like for a caller's own session and tokens; "
                        "unknown: no such route")
    target: str = Field(description="The request's path: the resource acted on")
    status: int = Field(description="The HTTP status answered")
    error: str | None = Field(None, description="The error code when it was an error "
                              "(forbidden, not_found, ...)")
    prev_hash: str = Field(description="The hash of the record before this one")
    hash: str = Field(description="sha256 over this record's fields and prev_hash")


class AuditVerify(BaseModel):
    ok: bool
    count: int = Field(description="Records checked (all those kept)")
    first_seq: int | None = Field(None, description="The oldest kept record (older ones were "
                                  "pruned by retention: the chain is checked from it)")
    last_seq: int | None = None
    broken_seq: int | None = Field(None, description="The first record whose hash does not "
                                   "match its fields or whose prev_hash is not the hash of "
                                   "the record before it")
    message: str = ""
