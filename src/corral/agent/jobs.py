"""Background jobs of the agent: long host work (downloads, conversions, libguestfs) with progress.

A route that starts long work answers at once with the job (``submit``); the engine then
asks ``GET /v1/jobs/{id}?after=VERSION&wait=S``, which answers as soon as the job has changed
since VERSION (or after S seconds), and copies the progress into its operation
(``corral.engine.agent_jobs.run_job``). ``DELETE /v1/jobs/{id}`` asks a job to stop: the work
sees it at its next progress report (``JobReporter`` raises) and cleans up after itself.

Every job has a key naming what it works on (``image:NAME``, ``disk:VM``). Submitting work
under a key whose job still runs returns that job instead of starting a second one, so an
engine that crashed and runs its executor again attaches to the work already under way.
A job may also carry a token (the engine passes its operation id as ``?op=``): submitting
again with the same token returns that job even once it is done, so work that finished
while the engine was down is not done twice (a customization that appends to a file).
Jobs live in memory: after an agent restart ``GET`` answers 404 and the next attempt of the
engine's operation starts the work again (the work removes what an interrupted run left).

A job's children (qemu-img, cp...; corral.agent.children) die with it: cancelling kills them
at once (work blocked in a child without progress reports stops too), and any left when the
work returns are killed. A submit under a key whose job was cancelled but still stops waits
for it (up to ``STOP_WAIT_S``) rather than attach to it or start a second writer beside it:
a resumed operation never collides with the orphan of an earlier attempt.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from corral.agent import children
from corral.agent_api import Answer
from corral.agent_api.jobs import JobInfo, JobStatus
from corral.errors import Conflict, CorralError, NotFound

log = logging.getLogger(__name__)

KEEP_DONE = 200  # finished jobs kept for the engine to read their result
KEEP_DONE_S = 3600.0
WAIT_MAX_S = 60.0
STOP_WAIT_S = 20.0  # a submit waits this long for a cancelled job under its key to stop


class JobCancelled(Conflict):
    """Raised inside a job's work when it was asked to stop."""


@dataclass
class Job:
    id: str
    kind: str
    key: str
    token: str | None = None
    status: JobStatus = "running"
    progress: int = 0
    message: str = ""
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    version: int = 0  # bumped at every change; the engine waits for a newer one
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    procs: children.Children = field(default_factory=children.Children, repr=False)

    @property
    def done(self) -> bool:
        return self.status != "running"

    def info(self) -> JobInfo:
        """What the job routes answer (corral.agent_api.jobs)."""
        return JobInfo(
            id=self.id, kind=self.kind, key=self.key, status=self.status,
            progress=self.progress, message=self.message, result=self.result,
            error=self.error, version=self.version, started=self.started,
            finished=self.finished, cancel_requested=self.cancel.is_set(),
        )



class JobReporter:
    """Handed to a job's work: ``report(percent, message)``; raises JobCancelled when asked."""

    def __init__(self, runner: JobRunner, job: Job) -> None:
        self._runner = runner
        self._job = job

    @property
    def cancelled(self) -> bool:
        return self._job.cancel.is_set()

    def check(self) -> None:
        if self._job.cancel.is_set():
            raise JobCancelled(f"{self._job.kind} {self._job.key} was cancelled")

    def __call__(self, percent: int, message: str | None = None) -> None:
        self.check()
        self._runner._update(self._job, progress=max(0, min(99, int(percent))), message=message)


# A work's result: the starting route's answer model (or its JSON), sent as the job's result.
Work = Callable[[JobReporter], Answer | dict[str, Any]]


class JobRunner:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._changed = threading.Condition()

    def submit(self, kind: str, key: str, work: Work, message: str = "starting",
               token: str | None = None) -> Job:
        """Start ``work`` in a thread, or return the job of this kind already running under
        ``key`` (Conflict if a job of another kind runs under it). A cancelled job still
        stopping under ``key`` is waited for (its children are killed already)."""
        deadline = time.monotonic() + STOP_WAIT_S
        with self._changed:
            while True:
                for job in self._jobs.values():
                    if token is not None and job.token == token and job.key == key:
                        return job
                busy = next((j for j in self._jobs.values() if j.key == key and not j.done), None)
                if busy is None:
                    break
                if not busy.cancel.is_set():
                    if busy.kind != kind:
                        raise Conflict(f"{key} is busy: a {busy.kind} job runs on it ({busy.message})")
                    return busy
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Conflict(f"{key} is busy: a cancelled {busy.kind} job still stops; "
                                   "try again")
                self._changed.wait(left)
            self._prune()
            job = Job(id=str(uuid.uuid4()), kind=kind, key=key, message=message, token=token)
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, work), name=f"job-{kind}",
                         daemon=True).start()
        return job

    def running(self, key: str) -> Job | None:
        with self._changed:
            return next((j for j in self._jobs.values() if j.key == key and not j.done), None)

    def get(self, job_id: str) -> Job:
        with self._changed:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found on this host (was the agent restarted?)")
        return job

    def wait(self, job_id: str, after: int = -1, timeout: float = 0.0) -> JobInfo:
        """The job once its version is above ``after`` (or it is done), or after ``timeout``."""
        job = self.get(job_id)
        deadline = time.monotonic() + min(max(timeout, 0.0), WAIT_MAX_S)
        with self._changed:
            while job.version <= after and not job.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return job.info()

    def cancel(self, job_id: str) -> JobInfo:
        job = self.get(job_id)
        job.cancel.set()  # first: the work then sees its killed child as the cancel
        job.procs.kill()
        self._update(job, message="cancelling")
        return job.info()

    def stop_all(self) -> None:
        """The agent exits: cancel every running job and kill every child. Takes no lock (it
        runs in the SIGTERM handler)."""
        for job in list(self._jobs.values()):
            if not job.done:
                job.cancel.set()
        children.kill_all()

    def list(self) -> list[JobInfo]:
        with self._changed:
            return [j.info() for j in self._jobs.values()]

    def _update(self, job: Job, **fields: Any) -> None:
        with self._changed:
            for k, v in fields.items():
                if v is not None:
                    setattr(job, k, v)
            job.version += 1
            self._changed.notify_all()

    def _run(self, job: Job, work: Work) -> None:
        try:
            with children.scope(job.procs):
                done = work(JobReporter(self, job))
            result = done.model_dump(mode="json") if isinstance(done, Answer) else done
        except Exception as exc:
            if job.cancel.is_set() and not isinstance(exc, JobCancelled):
                exc = JobCancelled(f"{job.kind} {job.key} was cancelled")  # its child was killed
            self._fail(job, exc)
        else:
            self._update(job, status="success", progress=100, result=result, message="done",
                         finished=time.time())

    def _fail(self, job: Job, exc: Exception) -> None:
        if isinstance(exc, CorralError):
            self._update(job, status="failure", error=exc.to_dict(), message=exc.message,
                         finished=time.time())
        else:  # a bug: report it rather than leave the job running
            log.error("job %s (%s %s) crashed", job.id, job.kind, job.key, exc_info=exc)
            # No raw Python exception for the user: the agent's log has it, under the job.
            msg = f"{job.kind} failed on an internal error; the agent's log has the details " \
                  f"(job {job.id})"
            self._update(job, status="failure", error={"code": "internal", "message": msg},
                         message=msg, finished=time.time())

    def _prune(self) -> None:
        """Forget old finished jobs (called with the lock held)."""
        now = time.time()
        done = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.finished or 0)
        for i, job in enumerate(done):
            if len(done) - i > KEEP_DONE or now - (job.finished or now) > KEEP_DONE_S:
                del self._jobs[job.id]


def router(runner: JobRunner) -> APIRouter:
    """``/v1/jobs``: read, wait for and cancel jobs (guarded by the caller's dependencies)."""
    r = APIRouter()

    @r.get("/v1/jobs")
    def list_jobs() -> list[JobInfo]:
        return runner.list()

    @r.get("/v1/jobs/{job_id}")
    def get_job(job_id: str, after: int = -1, wait: float = 0.0) -> JobInfo:
        return runner.wait(job_id, after, wait)

    @r.delete("/v1/jobs/{job_id}")
    def cancel_job(job_id: str) -> JobInfo:
        return runner.cancel(job_id)

    return r
