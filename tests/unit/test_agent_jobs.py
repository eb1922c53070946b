"""Agent jobs (corral.agent.jobs) and the engine's follower of them (corral.engine.agent_jobs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agent_transport import in_process, noting_paths
from fastapi import FastAPI

from corral.agent.jobs import JobReporter, JobRunner
from corral.agent.jobs import router as jobs_router
from corral.agent_api import Answer
from corral.agent_api.jobs import JobInfo
from corral.engine.agent_calls.jobs import JobStart
from corral.engine.agent_client import AgentClient
from corral.engine.agent_jobs import run_job
from corral.errors import Cancelled, Conflict, HostError, InvalidInput, NotFound
from corral.httpserve import install_error_handlers


class Size(Answer):
    """The result model of the test jobs below."""

    size: int


def wait_done(runner: JobRunner, job_id: str) -> JobInfo:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = runner.wait(job_id, 10**9, 1.0)
        if job.status != "running":
            return job
    raise AssertionError("job did not finish in 10 s")


def test_a_job_reports_progress_then_its_result() -> None:
    runner = JobRunner()
    go = threading.Event()

    def work(report: JobReporter) -> dict[str, Any]:
        report(40, "half-way")
        go.wait(10)
        return {"answer": 42}

    job = runner.submit("test", "thing:a", work)
    seen = runner.wait(job.id, 0, 5)  # answers as soon as the job changed
    assert seen.status == "running" and seen.progress == 40 and seen.message == "half-way"
    t0 = time.monotonic()
    same = runner.wait(job.id, seen.version, 0.3)  # nothing new: answers after the wait
    assert time.monotonic() - t0 >= 0.25 and same.version == seen.version
    go.set()
    done = wait_done(runner, job.id)
    assert done.status == "success" and done.progress == 100
    assert done.result == {"answer": 42}


def test_one_job_per_key() -> None:
    runner = JobRunner()
    go = threading.Event()
    job = runner.submit("test", "thing:a", lambda _r: {"ok": go.wait(10)})
    again = runner.submit("test", "thing:a", lambda _r: {"second": True})
    assert again.id == job.id  # an engine that re-runs its executor attaches to the job
    with pytest.raises(Conflict, match="thing:a is busy"):
        runner.submit("other", "thing:a", lambda _r: {})
    assert runner.running("thing:a") is job
    go.set()
    wait_done(runner, job.id)
    assert runner.running("thing:a") is None
    assert runner.submit("test", "thing:a", lambda _r: {}).id != job.id


def test_errors_and_cancel() -> None:
    runner = JobRunner()

    def bad(_r: JobReporter) -> dict[str, Any]:
        raise InvalidInput("no good", field="source")

    failed = wait_done(runner, runner.submit("test", "k:1", bad).id)
    assert failed.status == "failure"
    assert failed.error == {"code": "invalid_input", "message": "no good", "field": "source"}

    def forever(report: JobReporter) -> dict[str, Any]:
        while True:
            report(1, "working")
            time.sleep(0.01)

    job = runner.submit("test", "k:2", forever)
    runner.cancel(job.id)
    cancelled = wait_done(runner, job.id)
    assert cancelled.status == "failure" and "cancelled" in cancelled.message


class _Op:
    """What run_job needs of an operation: progress, and its cancel flag."""

    def __init__(self, op_id: str = "op-1") -> None:
        self.id = op_id
        self.seen: list[tuple[int, str | None]] = []
        self.cancelled = False

    def progress(self, percent: int, message: str | None = None) -> None:
        self.seen.append((percent, message))


@pytest.fixture()
def agent() -> Iterator[tuple[AgentClient, JobRunner, FastAPI]]:
    runner = JobRunner()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(jobs_router(runner))
    client = AgentClient("http://agent", reconnect_s=0, transport=in_process(app))
    yield client, runner, app
    client.close()


def test_run_job_forwards_progress_and_returns_the_result(
        agent: tuple[AgentClient, JobRunner, FastAPI]) -> None:
    client, runner, app = agent

    def work(report: JobReporter) -> dict[str, Any]:
        for pct in (10, 50, 90):
            report(pct, f"at {pct}")
            time.sleep(0.05)
        return {"size": 7}

    runs: list[str | None] = []

    @app.post("/v1/work")
    def start(op: str | None = None) -> JobInfo:
        def counted(report: JobReporter) -> dict[str, Any]:
            runs.append(op)
            return work(report)

        return runner.submit("work", "w:1", counted, token=op).info()

    start_work = JobStart("/v1/work", None, Size)
    op = _Op()
    assert run_job(client, op, start_work, span=(0, 50)) == Size(size=7)  # type: ignore[arg-type]
    assert (5, "at 10") in op.seen and (25, "at 50") in op.seen and (45, "at 90") in op.seen
    assert [p for p, _ in op.seen] == sorted(p for p, _ in op.seen)
    # The same operation run again (an engine restart) gets the job it started: no new work.
    assert run_job(client, _Op(), start_work).size == 7  # type: ignore[arg-type]
    assert runs == ["op-1"]
    assert run_job(client, _Op("op-2"), start_work).size == 7  # type: ignore[arg-type]
    assert runs == ["op-1", "op-2"]


def test_run_job_raises_the_job_error_and_a_forgotten_job(
        agent: tuple[AgentClient, JobRunner, FastAPI]) -> None:
    client, runner, app = agent

    def bad(_r: JobReporter) -> dict[str, Any]:
        raise Conflict("busy elsewhere")

    @app.post("/v1/bad")
    def start_bad() -> JobInfo:
        return runner.submit("bad", "b:1", bad).info()

    @app.post("/v1/ghost")
    def ghost() -> JobInfo:
        return JobInfo(id="no-such-job", kind="ghost", key="g:1", status="running")

    @app.post("/v1/odd")
    def odd() -> JobInfo:
        return runner.submit("odd", "o:1", lambda _r: {"size": "big"}).info()

    with pytest.raises(Conflict, match="busy elsewhere"):
        run_job(client, _Op(), JobStart("/v1/bad", None, Size))  # type: ignore[arg-type]
    with pytest.raises(HostError, match="forgot job no-such-job"):
        run_job(client, _Op(), JobStart("/v1/ghost", None, Size))  # type: ignore[arg-type]
    # A result that does not read as the start method's model: the agent's fault, a HostError.
    with pytest.raises(HostError, match="result of the agent's odd job"):
        run_job(client, _Op(), JobStart("/v1/odd", None, Size))  # type: ignore[arg-type]


def test_a_cancelled_operation_cancels_its_job(
        agent: tuple[AgentClient, JobRunner, FastAPI]) -> None:
    """The operation's cancel flag cancels the agent's job; run_job waits for the job to end
    (it cleans up after itself) and raises Cancelled."""
    client, runner, app = agent
    cleaned = threading.Event()

    def forever(report: JobReporter) -> dict[str, Any]:
        try:
            while True:
                report(5, "working")
                time.sleep(0.01)
        finally:
            cleaned.set()

    @app.post("/v1/long")
    def start_long() -> JobInfo:
        return runner.submit("long", "l:1", forever).info()

    class _Cancelling(_Op):
        def progress(self, percent: int, message: str | None = None) -> None:
            super().progress(percent, message)
            self.cancelled = True  # cancelled once the work is under way

    with pytest.raises(Cancelled):
        run_job(client, _Cancelling(), JobStart("/v1/long", None, Size))  # type: ignore[arg-type]
    assert cleaned.is_set()


def test_the_typed_job_calls_against_the_agents_job_router() -> None:
    """start_job, job (long poll) and cancel_job reach the agent's JobRunner router in
    process; run_job follows a job through them and its cancel reaches the agent."""
    runner = JobRunner()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(jobs_router(runner))
    step, stop = threading.Event(), threading.Event()

    def work(report: JobReporter) -> Size:  # a work may answer its route's model
        report(30, "a third")
        step.wait(10)
        while not stop.is_set():
            report(60, "waiting to be stopped")  # raises once cancelled
            time.sleep(0.01)
        return Size(size=3)

    @app.post("/v1/things/{name}/grow")
    def grow(name: str, op: str | None = None) -> JobInfo:
        return runner.submit("thing.grow", f"thing:{name}", work, token=op).info()

    seen: list[str] = []
    client = AgentClient("http://agent", reconnect_s=0, transport=in_process(app, noting_paths(seen)))
    start = JobStart("/v1/things/a/grow", None, Size)
    job = client.start_job(start, "op-9")
    assert job.kind == "thing.grow" and job.key == "thing:a" and job.status == "running"
    assert client.start_job(start, "op-9").id == job.id  # the same operation: the same job
    now = client.job(job.id, after=job.version - 1 if job.version else -1, wait=5)
    while now.progress < 30:
        now = client.job(job.id, after=now.version, wait=5)
    assert (now.progress, now.message) == (30, "a third")
    assert [j.id for j in client.jobs()] == [job.id]
    assert client.cancel_job(job.id).cancel_requested is True
    assert runner.get(job.id).cancel.is_set()  # the cancel reached the agent's job
    step.set()
    done = client.job(job.id, after=now.version, wait=5)
    while done.status == "running":
        done = client.job(job.id, after=done.version, wait=5)
    assert done.status == "failure" and "cancelled" in done.message
    with pytest.raises(NotFound):
        client.job("no-such-job")

    # run_job: the typed result back; then a cancel of the operation sent as DELETE.
    stop.set()
    assert run_job(client, _Op("op-10"),  # type: ignore[arg-type]
                   JobStart("/v1/things/b/grow", None, Size)) == Size(size=3)
    stop.clear()

    class _Cancelling(_Op):
        def progress(self, percent: int, message: str | None = None) -> None:
            super().progress(percent, message)
            self.cancelled = percent >= 60  # once the work is under way

    seen.clear()
    with pytest.raises(Cancelled):
        run_job(client, _Cancelling("op-11"),  # type: ignore[arg-type]
                JobStart("/v1/things/c/grow", None, Size))
    started = runner.running("thing:c") or next(
        j for j in runner._jobs.values() if j.key == "thing:c")
    assert f"DELETE /v1/jobs/{started.id}" in seen
    assert seen[0] == "POST /v1/things/c/grow"
    client.close()
