"""The engine ↔ agent protocol: every request body and answer of the agent's HTTP API.

Both sides import these models: the agent declares its routes' bodies with them (FastAPI
refuses what does not fit with a 422) and builds its answers from them; the engine sends
them through ``corral.engine.agent_client.AgentClient``'s typed methods and reads answers
back into them. One module per resource (domains, networks, pools, ...), pure: pydantic and
the standard library only, so importing one costs the idle agent nothing it does not load
anyway (no libvirt, no httpx).

Requests forbid unknown fields (a typo is an error, not a silent default); answers ignore
them, so an engine can talk to an agent one version newer during a rolling upgrade.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """An answer: fields this side does not know are ignored."""

    model_config = ConfigDict(extra="ignore")


class Deleted(Answer):
    """What a DELETE answers: False when there was nothing to delete (deletes are
    idempotent)."""

    deleted: bool


class Ok(Answer):
    """What a check (a dry run) answers when it passes; a failing one answers an error."""

    ok: bool = True
