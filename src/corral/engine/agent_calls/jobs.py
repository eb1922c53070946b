"""Calls of the agent's jobs (``corral.agent_api.jobs``), and ``JobStart``: a route that
starts one, as corral.engine.agent_jobs.run_job takes it.

A start method of a mixin (``ImageCalls.import_image_job``, ...) sends nothing: it names the
route, its body and the model of the finished job's result, and run_job sends it (with the
operation's id, so that a re-run attaches to the same job), follows and cancels the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from corral.agent_api import Answer
from corral.agent_api.jobs import JobInfo
from corral.engine.agent_calls import AgentCalls, first_problem
from corral.errors import HostError

R = TypeVar("R", bound=Answer)


@dataclass(frozen=True)
class JobStart(Generic[R]):
    """``POST path`` with ``body`` starts the job; its result reads as ``result``."""

    path: str
    body: BaseModel | None  # a corral.agent_api Body (customizations: corral.api's model)
    result: type[R]

    def read(self, job: JobInfo) -> R:
        """The result of a job that succeeded."""
        try:
            return self.result.model_validate(job.result or {})
        except ValidationError as exc:
            raise HostError(f"the result of the agent's {job.kind} job {job.id} is not what "
                            f"this engine reads: {first_problem(exc)}") from None


class JobCalls(AgentCalls):
    def start_job(self, job: JobStart[R], op_id: str | None = None) -> JobInfo:
        """Start the job (or get the one already under way under its key, or started by the
        operation ``op_id`` before an engine restart)."""
        path = job.path if op_id is None else \
            f"{job.path}{'&' if '?' in job.path else '?'}op={op_id}"
        return self._send("POST", path, JobInfo, job.body, timeout=60)

    def job(self, job_id: str, after: int = -1, wait: float = 0.0) -> JobInfo:
        """The job once its version is above ``after`` (or it is done), or after ``wait`` s
        (the agent caps it at 60)."""
        return self._send("GET", f"/v1/jobs/{job_id}?after={after}&wait={wait:g}", JobInfo,
                          timeout=wait + 30)

    def cancel_job(self, job_id: str) -> JobInfo:
        """Ask the job to stop: its work sees it at its next progress report."""
        return self._send("DELETE", f"/v1/jobs/{job_id}", JobInfo, timeout=10)

    def jobs(self) -> list[JobInfo]:
        return self._send_list("GET", "/v1/jobs", JobInfo, timeout=10)
