"""Agent jobs (corral.agent.jobs) and the engine's follower of them (corral.engine.agent_jobs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent.jobs import JobReporter, JobRunner
from corral.agent.jobs import router as jobs_router
from corral.engine.agent_client import AgentClient
from corral.engine.agent_jobs import run_job
from corral.errors import Cancelled, Conflict, HostError, InvalidInput
from corral.httpserve import install_error_handlers


def wait_done(runner: JobRunner, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = runner.wait(job_id, 10**9, 1.0)
        if job["status"] != "running":
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
    assert seen["status"] == "running" and seen["progress"] == 40 and seen["message"] == "half-way"
    t0 = time.monotonic()
    same = runner.wait(job.id, seen["version"], 0.3)  # nothing new: answers after the wait
    assert time.monotonic() - t0 >= 0.25 and same["version"] == seen["version"]
    go.set()
    done = wait_done(runner, job.id)
    assert done["status"] == "success" and done["progress"] == 100
    assert done["result"] == {"answer": 42}


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
    assert failed["status"] == "failure"
    assert failed["error"] == {"code": "invalid_input", "message": "no good", "field": "source"}

    def forever(report: JobReporter) -> dict[str, Any]:
        while True:
            report(1, "working")
            time.sleep(0.01)

    job = runner.submit("test", "k:2", forever)
    runner.cancel(job.id)
    cancelled = wait_done(runner, job.id)
    assert cancelled["status"] == "failure" and "cancelled" in cancelled["message"]


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
    client = AgentClient("http://agent", "token")
    client._http = TestClient(app, base_url="http://agent")
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
    def start(op: str | None = None) -> dict[str, Any]:
        def counted(report: JobReporter) -> dict[str, Any]:
            runs.append(op)
            return work(report)

        return runner.submit("work", "w:1", counted, token=op).to_dict()

    op = _Op()
    assert run_job(client, op, "POST", "/v1/work", span=(0, 50)) == {"size": 7}  # type: ignore[arg-type]
    assert (5, "at 10") in op.seen and (25, "at 50") in op.seen and (45, "at 90") in op.seen
    assert [p for p, _ in op.seen] == sorted(p for p, _ in op.seen)
    # The same operation run again (an engine restart) gets the job it started: no new work.
    assert run_job(client, _Op(), "POST", "/v1/work") == {"size": 7}  # type: ignore[arg-type]
    assert runs == ["op-1"]
    assert run_job(client, _Op("op-2"), "POST", "/v1/work") == {"size": 7}  # type: ignore[arg-type]
    assert runs == ["op-1", "op-2"]


def test_run_job_raises_the_job_error_and_a_forgotten_job(
        agent: tuple[AgentClient, JobRunner, FastAPI]) -> None:
    client, runner, app = agent

    def bad(_r: JobReporter) -> dict[str, Any]:
        raise Conflict("busy elsewhere")

    @app.post("/v1/bad")
    def start_bad() -> dict[str, Any]:
        return runner.submit("bad", "b:1", bad).to_dict()

    @app.post("/v1/ghost")
    def ghost() -> dict[str, Any]:
        return {"id": "no-such-job", "status": "running", "version": 0}

    with pytest.raises(Conflict, match="busy elsewhere"):
        run_job(client, _Op(), "POST", "/v1/bad")  # type: ignore[arg-type]
    with pytest.raises(HostError, match="forgot job no-such-job"):
        run_job(client, _Op(), "POST", "/v1/ghost")  # type: ignore[arg-type]


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
    def start_long() -> dict[str, Any]:
        return runner.submit("long", "l:1", forever).to_dict()

    class _Cancelling(_Op):
        def progress(self, percent: int, message: str | None = None) -> None:
            super().progress(percent, message)
            self.cancelled = True  # cancelled once the work is under way

    with pytest.raises(Cancelled):
        run_job(client, _Cancelling(), "POST", "/v1/long")  # type: ignore[arg-type]
    assert cleaned.is_set()
