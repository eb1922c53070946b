"""Run an agent job (corral.agent.jobs) from an operation's executor, forwarding its progress.

    result = run_job(agent, op, "POST", f"/v1/images/{name}/import", body, span=(5, 99))

starts the job (or, after an engine restart, gets the one this operation started: still
running, or done while the engine was down; the operation id goes along as ``?op=``),
long-polls ``GET /v1/jobs/{id}`` and copies each new progress into the operation, scaled
into ``span``. A failed job raises its error (rebuilt from its code); an agent that cannot
be reached is retried for ``unreachable_s``; a job the agent forgot (it restarted) is a
HostError; past ``timeout`` the job is cancelled and HostError raised. An operation
cancelled meanwhile (``op.cancelled``) cancels the job, waits for it to clean up after
itself, and raises Cancelled (a job that finished first returns its result).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from corral import errors
from corral.engine.agent_client import AgentClient
from corral.engine.operations import OpContext
from corral.errors import AgentUnreachable, Cancelled, CorralError, HostError, NotFound

POLL_WAIT_S = 5.0  # also how soon a cancel of the operation is seen


def run_job(agent: AgentClient, op: OpContext, method: str, path: str, body: Any = None, *,
            span: tuple[int, int] = (0, 100), timeout: float = 6 * 3600,
            unreachable_s: float = 120.0) -> dict[str, Any]:
    tagged = f"{path}{'&' if '?' in path else '?'}op={op.id}"  # the same job if run again
    job = agent.call(method, tagged, json=body, timeout=60)
    job_id = str(job["id"])
    deadline = time.monotonic() + timeout
    last_progress: tuple[int, str] | None = None
    lost_since: float | None = None
    cancelling = False
    while True:
        if job.get("status") == "success":
            return dict(job.get("result") or {})
        if job.get("status") == "failure":
            if cancelling:
                raise Cancelled(f"operation {op.id} was cancelled")
            raise errors.from_dict(job.get("error") or {"message": job.get("message") or "failed"})
        if op.cancelled and not cancelling:
            cancelling = True  # the job stops at its next progress report, and cleans up
            with contextlib.suppress(CorralError):
                agent.call("DELETE", f"/v1/jobs/{job_id}", timeout=10)
        now_progress = (int(job.get("progress") or 0), str(job.get("message") or ""))
        if now_progress != last_progress:
            last_progress = now_progress
            lo, hi = span
            op.progress(lo + (hi - lo) * now_progress[0] // 100, now_progress[1] or None)
        if time.monotonic() > deadline:
            with contextlib.suppress(CorralError):
                agent.call("DELETE", f"/v1/jobs/{job_id}", timeout=10)
            raise HostError(f"the agent's job {job_id} did not finish in {timeout:.0f} s; cancelled")
        try:
            after = int(job.get("version", -1))
            job = agent.call("GET", f"/v1/jobs/{job_id}?after={after}&wait={POLL_WAIT_S:g}",
                             timeout=POLL_WAIT_S + 30)
            lost_since = None
        except NotFound as exc:
            raise HostError(f"the agent forgot job {job_id} (it restarted during the work)") from exc
        except AgentUnreachable:  # no answer: it may come back; an answered error is final
            if lost_since is None:
                lost_since = time.monotonic()
            if time.monotonic() - lost_since > unreachable_s:
                raise
            time.sleep(1.0)

