"""Crash leftovers: the agent's children die with it and with their job (corral.agent.children),
the agent removes partial files at start, and a second start of a clone attaches to the first.

Real processes throughout (sleep, sh, qemu-img), killed by pid in the fixtures' finalizers;
every wait is bounded.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent import children, clones
from corral.agent.app import Agent, AgentSettings
from corral.agent.hypervisor import Hypervisor
from corral.agent.jobs import JobReporter, JobRunner
from corral.agent.jobs import router as jobs_router
from corral.agent.storage import Storage
from corral.agent_api.jobs import JobInfo
from corral.httpserve import install_error_handlers

ROOT = Path(__file__).resolve().parents[2]


def wait_until(cond: Callable[[], Any], timeout: float = 5.0, step: float = 0.05) -> Any:
    """``cond()`` once it is truthy, polled at most ``timeout`` seconds; else None."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 2):
        got = cond()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)
    return cond()


def gone(proc: psutil.Process | int) -> bool:
    """Dead (a zombie too: nothing reaps it where PID 1 does not)."""
    try:
        p = psutil.Process(proc) if isinstance(proc, int) else proc
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture()
def reaper() -> Iterator[list[psutil.Process]]:
    """Processes to SIGKILL at the end whatever happens (psutil refuses a reused pid)."""
    procs: list[psutil.Process] = []
    yield procs
    for p in procs:
        try:
            p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        wait_until(functools.partial(gone, p), timeout=5)


@pytest.fixture()
def runner() -> Iterator[JobRunner]:
    """A JobRunner whose jobs are all cancelled (children killed) and finished at the end."""
    jobs = JobRunner()
    yield jobs
    for info in jobs.list():
        if info.status == "running":
            jobs.cancel(info.id)
            wait_done(jobs, info.id)


def wait_done(runner: JobRunner, job_id: str, timeout: float = 10.0) -> JobInfo:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout) + 1):
        info = runner.wait(job_id, 10**9, max(0.0, min(1.0, deadline - time.monotonic())))
        if info.status != "running" or time.monotonic() > deadline:
            return info
    return runner.get(job_id).info()


# -- (a) the agent is killed: its job's children die with it --------------------------------

AGENT = """
import subprocess, sys, time
from corral.agent import children
from corral.agent.jobs import JobRunner

def work(report):  # a job runs in a worker thread: PDEATHSIG follows that thread
    if sys.argv[1] == "helper":
        children.run(["sleep", "60"])
    else:
        subprocess.run(["sleep", "60"])
    return {}

JobRunner().submit("test", "k:1", work)
time.sleep(60)
"""


@pytest.mark.parametrize("spawn", ["helper", "plain"])
def test_kill_9_of_the_agent_kills_the_children_of_its_jobs(
        spawn: str, reaper: list[psutil.Process]) -> None:
    agent = subprocess.Popen([sys.executable, "-c", AGENT, spawn], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    reaper.append(psutil.Process(agent.pid))
    try:
        found = wait_until(lambda: [c for c in psutil.Process(agent.pid).children()
                                    if c.name() == "sleep"], timeout=15)
        assert found, "the agent's job did not start its child"
        sleep = found[0]
        reaper.append(sleep)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(5)
        if spawn == "helper":
            assert wait_until(lambda: gone(sleep), timeout=5), "the child outlived the agent"
        else:  # the bug this guards against: a plain child goes on as an orphan
            time.sleep(0.5)
            assert not gone(sleep)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)


# -- (b) a job cancelled, or ended, takes its children along -----------------------------------

def test_cancelling_a_job_kills_its_process_group_at_once(runner: JobRunner,
                                                          reaper: list[psutil.Process]) -> None:
    def work(_report: JobReporter) -> dict[str, Any]:  # no progress report: blocked in sh
        children.run(["sh", "-c", "sleep 60 & sleep 60; wait"], check=True)
        return {}

    job = runner.submit("test", "k:cancel", work)
    pgid = wait_until(lambda: job.procs.pids(), timeout=5)
    assert pgid, "the job did not start its child"
    leader = psutil.Process(pgid[0])
    reaper.append(leader)
    kids = wait_until(lambda: len(leader.children()) == 2 and leader.children(), timeout=5)
    assert kids, "sh did not start its two sleeps"
    reaper.extend(kids)
    assert {os.getpgid(k.pid) for k in kids} == {leader.pid}  # one group, led by sh

    t0 = time.monotonic()
    runner.cancel(job.id)
    done = wait_done(runner, job.id, 5)
    assert done.status == "failure" and "cancelled" in done.message
    assert time.monotonic() - t0 < 5
    assert wait_until(lambda: all(gone(p) for p in (leader, *kids)), timeout=5)
    assert leader.pid not in children.live()


def test_a_child_left_running_dies_when_its_job_ends(runner: JobRunner,
                                                     reaper: list[psutil.Process]) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def work(_report: JobReporter) -> dict[str, Any]:
        started.append(children.popen(["sleep", "60"]))  # never waited for: a bug in a job
        return {}

    job = runner.submit("test", "k:leak", work)
    assert wait_done(runner, job.id).status == "success"
    assert started
    leaked = psutil.Process(started[0].pid)
    reaper.append(leaked)
    try:
        assert wait_until(lambda: gone(leaked), timeout=5)
        assert started[0].wait(5) == -signal.SIGKILL
    finally:
        started[0].kill()
        started[0].wait(5)


def test_run_kills_a_child_that_times_out(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            children.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=1.0)
        # the background sleep was in sh's group: killed with it
        assert wait_until(lambda: gone(int(pidfile.read_text())), timeout=5)
    finally:
        if pidfile.exists() and not gone(pid := int(pidfile.read_text())):
            os.kill(pid, signal.SIGKILL)
    ok = children.run(["sh", "-c", "echo hi"], capture_output=True, text=True, check=True)
    assert ok.stdout == "hi\n" and ok.returncode == 0
    with pytest.raises(subprocess.CalledProcessError):
        children.run(["false"], check=True)


def test_sigterm_stops_the_jobs_and_their_children_before_uvicorn_drains(
        runner: JobRunner, reaper: list[psutil.Process]) -> None:
    import uvicorn

    from corral.agent.__main__ import _Server

    job = runner.submit("test", "k:term", lambda _r: {"rc": children.run(["sleep", "60"],
                                                                         check=True).returncode})
    pid = wait_until(lambda: job.procs.pids(), timeout=5)
    assert pid, "the job did not start its child"
    reaper.append(psutil.Process(pid[0]))
    server = _Server(uvicorn.Config(FastAPI()), runner.stop_all, started=lambda: None)
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
    done = wait_done(runner, job.id, 5)
    assert done.status == "failure" and "cancelled" in done.message
    assert gone(pid[0])


# -- (c) the agent's start removes what dead jobs left -----------------------------------------

def test_agent_start_sweeps_partial_files_and_keeps_finished_ones(tmp_path: Path) -> None:
    st = tmp_path / "state" / "storage"
    pool, shared = tmp_path / "pool1", tmp_path / "pool2"
    keep = [st / "images/keep.qcow2", st / "images/keep.vmlinuz", st / "vms/vm1.qcow2",
            st / "vms/vm1-cidata.iso", st / "vms/bases/a@c.qcow2", st / "build/cache/k.deb",
            pool / "vol.qcow2", pool / "notes.part", pool / ".vms/x.qcow2",
            shared / ".v.qcow2.part"]  # another host's agent may be writing a shared pool
    leftovers = [st / "images/new.part", st / "images/big.download",
                 st / "images/keep.customize", st / "vms/vm2.qcow2.part", st / "vms/vm3.part",
                 st / "vms/vm1-cidata.iso.part", st / "vms/bases/a@b.part",
                 st / ".ova-abc/disk1.vmdk", st / "build/.customize-x/password0",
                 pool / ".vol2.raw.part", pool / "vol3.qcow2.part", pool / ".vms/x.qcow2.part",
                 pool / ".bases/.img.i.qcow2.part"]
    for f in (*keep, *leftovers):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x" * 4096)
    pools = tmp_path / "state" / "pools"
    pools.mkdir(parents=True)
    (pools / "p1.json").write_text(json.dumps({"name": "p1", "type": "dir", "path": str(pool)}))
    (pools / "p2.json").write_text(json.dumps({"name": "p2", "type": "shared",
                                               "path": str(shared)}))
    (pools / "bad.json").write_text("{not json")

    agent = Agent(AgentSettings(state_dir=tmp_path / "state",
                                libvirt_uri="test:///default"))

    removed = {p if p.parent.name not in (".ova-abc", ".customize-x") else p.parent
               for p in leftovers}
    assert set(agent.leftovers) == removed
    assert all(f.exists() for f in keep)
    assert not any(p.exists() for p in removed)
    assert Agent(AgentSettings(state_dir=tmp_path / "state")).leftovers == []


# -- (d) the same clone started twice: one job, one qemu-img ----------------------------------

@pytest.fixture()
def slow_qemu_img(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``qemu-img convert`` rate-limited (the real qemu-img, exec'd with ``-r``): a clone of
    a few MiB takes seconds, long enough to start it again meanwhile."""
    real = shutil.which("qemu-img")
    if real is None:
        pytest.skip("qemu-img is not installed")
    shim = tmp_path / "bin" / "qemu-img"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nif [ "$1" = convert ]; then shift; exec {real} convert -r 256K "$@"; fi\n'
                    f'exec {real} "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    return real  # the one at full speed


def writers(target: Path) -> list[psutil.Process]:
    """Live qemu-img processes writing ``target``'s ``.part``."""
    part = f"{target}.part"
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] == "qemu-img" and part in (p.info["cmdline"] or []) and not gone(p):
            found.append(p)
    return found


def test_the_same_clone_started_twice_runs_one_qemu_img(
        tmp_path: Path, slow_qemu_img: str, runner: JobRunner,
        reaper: list[psutil.Process]) -> None:
    storage = Storage(tmp_path / "storage")
    raw = tmp_path / "src.raw"
    raw.write_bytes(os.urandom(4 << 20))
    children.run([slow_qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw),
                  str(storage.disk_path("src"))], check=True, timeout=60)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(jobs_router(runner))
    app.include_router(clones.router(storage, Hypervisor("test:///default"), runner))
    target = storage.disk_path("new")

    with TestClient(app) as client:
        first = client.post("/v1/disks/new/full-clone?op=op-1", json={"source": "src"}).json()
        assert first["status"] == "running", first
        found = wait_until(lambda: writers(target), timeout=10)
        assert found, "the clone's qemu-img did not start"
        reaper.extend(found)
        # the engine resumes its operation (same op), and another operation clones the same VM
        again = client.post("/v1/disks/new/full-clone?op=op-1", json={"source": "src"}).json()
        other = client.post("/v1/disks/new/full-clone?op=op-2", json={"source": "src"}).json()
        assert again["id"] == first["id"] == other["id"]
        time.sleep(0.5)
        assert len(writers(target)) == 1
        assert [j.id for j in runner.list() if j.status == "running"] == [first["id"]]

        # cancelled: its qemu-img is gone and its .part removed before the next one starts
        client.delete(f"/v1/jobs/{first['id']}")
        third = client.post("/v1/disks/new/full-clone?op=op-3", json={"source": "src"}).json()
        assert third["id"] != first["id"]
        assert runner.get(first["id"]).done and all(gone(p) for p in found)
        now = wait_until(lambda: writers(target), timeout=10)
        assert len(now) == 1 and now[0].pid not in {p.pid for p in found}
        reaper.extend(now)
        client.delete(f"/v1/jobs/{third['id']}")
        assert wait_done(runner, third["id"]).status == "failure"
        assert wait_until(lambda: not writers(target), timeout=5)
    assert not target.exists() and not Path(f"{target}.part").exists()
