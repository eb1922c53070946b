"""Background jobs of the agent (corral.agent.jobs): ``/v1/jobs``.

A route that starts long work answers at once with a ``JobInfo``; the engine long-polls
``GET /v1/jobs/{id}?after=VERSION&wait=S`` (query parameters, no body) and cancels with
``DELETE /v1/jobs/{id}`` (corral.engine.agent_jobs.run_job). A finished job's ``result`` is
the answer model of the route that started it (each start method of
corral.engine.agent_calls names it), kept here as plain JSON: the runner knows no kinds.
"""

from __future__ import annotations

from typing import Any, Literal

from corral.agent_api import Answer

JobStatus = Literal["running", "success", "failure"]


class JobInfo(Answer):
    """A job as it stands; ``version`` grows at every change (what ``after=`` compares)."""

    id: str
    kind: str
    key: str  # what it works on: image:NAME, disk:VM, volume:POOL/NAME
    status: JobStatus
    progress: int = 0  # percent; 100 once it succeeded
    message: str = ""
    result: dict[str, Any] | None = None  # success: the starting route's answer model
    error: dict[str, Any] | None = None  # failure: a corral error (corral.errors.from_dict)
    version: int = 0
    started: float = 0.0
    finished: float | None = None
    cancel_requested: bool = False
