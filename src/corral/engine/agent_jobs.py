"""Run an agent job (corral.agent.jobs) from an operation's executor, forwarding its progress.

    info = run_job(agent, op, agent.import_image_job(name, body), span=(5, 99))

takes a ``JobStart`` (the typed start methods of corral.engine.agent_calls, ``..._job``) and
returns the job's result as the model the start method names. It starts the job (or, after
an engine restart, gets the one this operation started: still running, or done while the
engine was down; the operation id goes along as ``?op=``), long-polls ``agent.job`` and copies
each new progress into the operation, scaled into ``span``. A failed job raises its error
(rebuilt from its code); an agent that cannot be reached is retried for ``unreachable_s``; a
job the agent forgot (it restarted) is a HostError; past ``timeout`` the job is cancelled and
HostError raised. An operation cancelled meanwhile (``op.cancelled``) cancels the job, waits
for it to clean up after itself, and raises Cancelled (a job that finished first returns its
result).
"""

from __future__ import annotations

import contextlib
import time
from typing import TypeVar

from corral import errors
from corral.agent_api import Answer
from corral.engine.agent_calls.jobs import JobStart
from corral.engine.agent_client import AgentClient
from corral.engine.operations import OpContext
from corral.errors import AgentUnreachable, Cancelled, CorralError, HostError, NotFound

R = TypeVar("R", bound=Answer)

POLL_WAIT_S = 5.0  # also how soon a cancel of the operation is seen


def run_job(agent: AgentClient, op: OpContext, start: JobStart[R], *,
            span: tuple[int, int] = (0, 100), timeout: float = 6 * 3600,
            unreachable_s: float = 120.0) -> R:
    job = agent.start_job(start, op.id)  # the same job if the operation runs again
    deadline = time.monotonic() + timeout
    last_progress: tuple[int, str] | None = None
    lost_since: float | None = None
    cancelling = False
    while True:
        if job.status == "success":
            return start.read(job)
        if job.status == "failure":
            if cancelling:
                raise Cancelled(f"operation {op.id} was cancelled")
            raise errors.from_dict(job.error or {"message": job.message or "failed"})
        if op.cancelled and not cancelling:
            cancelling = True  # the job stops at its next progress report, and cleans up
            with contextlib.suppress(CorralError):
                agent.cancel_job(job.id)
        if (job.progress, job.message) != last_progress:
            last_progress = (job.progress, job.message)
            lo, hi = span
            op.progress(lo + (hi - lo) * job.progress // 100, job.message or None)
        if time.monotonic() > deadline:
            with contextlib.suppress(CorralError):
                agent.cancel_job(job.id)
            raise HostError(f"the agent's job {job.id} did not finish in {timeout:.0f} s; cancelled")
        try:
            job = agent.job(job.id, after=job.version, wait=POLL_WAIT_S)
            lost_since = None
        except NotFound as exc:
            raise HostError(f"the agent forgot job {job.id} (it restarted during the work)") from exc
        except AgentUnreachable:  # no answer: it may come back; an answered error is final
            if lost_since is None:
                lost_since = time.monotonic()
            if time.monotonic() - lost_since > unreachable_s:
                raise
            time.sleep(1.0)
