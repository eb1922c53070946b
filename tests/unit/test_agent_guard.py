"""The host lease guard (`corral agent guard`, corral.agent.guard) with real processes, no
libvirt: its child is a tiny relay script that renews the lease through
corral.agent.guard_link on the test's word; "QEMUs" are copies of sleep named
qemu-system-x86_64 whose pid files sit in a temp dir standing for /run/libvirt/qemu."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent import domain_routes
from corral.agent.guard import Guard
from corral.agent.guard_link import REFUSED, GuardLink, refuse_start_if_fenced
from corral.agent.hypervisor import Hypervisor
from corral.agent.storage import Storage
from corral.agent_api.domains import HostFacts
from corral.httpserve import install_error_handlers

WAIT_S = 15.0

RELAY = textwrap.dedent("""
    # The guard's child: says it started, asks the guard's state every 0.2 s (as the agent's
    # reporter does) until told to hang, and relays the test's requests to the guard.
    import json, os, socket, sys, threading
    from pathlib import Path
    from corral.agent.guard_link import GuardLink

    tmp = Path(sys.argv[1])
    with open(tmp / "starts", "a") as f:
        f.write(f"{os.getpid()}\\n")
    link = GuardLink.from_env()
    hang = threading.Event()

    def beat():
        while not hang.wait(0.2):
            link.state()

    threading.Thread(target=beat, daemon=True).start()
    path = tmp / "relay.sock"
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen()
    while True:
        conn, _ = srv.accept()
        with conn, conn.makefile("rw") as f:
            req = json.loads(f.readline())
            if req["op"] == "exit":
                f.write("{}\\n")
                f.flush()
                path.unlink(missing_ok=True)
                sys.exit(int(req.get("code", 0)))
            if req["op"] == "hang":  # silent from now on, as a hung agent
                hang.set()
                f.write("{}\\n")
                f.flush()
                continue
            if req["op"] == "renew":
                st = link.renew(req["at"], by=req["by"], lease_s=req.get("lease_s"),
                                armed=req.get("armed"))
            else:
                st = link.state()
            f.write(json.dumps(None if st is None else st.model_dump()) + "\\n")
            f.flush()
""")


def wait_for(what: str, cond: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@dataclass
class Lab:
    tmp: Path
    guard: subprocess.Popen[bytes]
    qemu_dir: Path
    procs: list[subprocess.Popen[bytes]]

    def ask(self, req: dict[str, Any]) -> Any:
        """One request to the relay (waits, bounded, while the guard (re)starts it)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(str(self.tmp / "relay.sock"))
                    with s.makefile("rw") as f:
                        f.write(json.dumps(req) + "\n")
                        f.flush()
                        return json.loads(f.readline())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def renew(self, ago: float = 0.0, **kw: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.ask({"op": "renew", "at": time.monotonic() - ago,
                                        "by": "engine", **kw})
        return out

    def starts(self) -> list[int]:
        path = self.tmp / "starts"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def spawn(self, name: str, binary: str = "qemu-system-x86_64") -> subprocess.Popen[bytes]:
        """A process of ``binary`` (a copy of sleep) with a libvirt pid file ``name``.pid."""
        proc = subprocess.Popen([str(self.tmp / "bin" / binary), "600"])
        self.procs.append(proc)
        (self.qemu_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    (tmp_path / "relay.py").write_text(RELAY)
    qemu_dir = tmp_path / "qemu"
    qemu_dir.mkdir()
    (tmp_path / "bin").mkdir()
    sleep = shutil.which("sleep")
    assert sleep
    for name in ("qemu-system-x86_64", "sleep"):
        os.symlink(sleep, tmp_path / "bin" / name)
    guard = subprocess.Popen([
        sys.executable, "-m", "corral.agent.guard", "--qemu-pid-dir", str(qemu_dir),
        "--leave-command", f"touch {tmp_path / 'left'}",
        "--join-command", f"touch {tmp_path / 'joined'}",
        "--", sys.executable, str(tmp_path / "relay.py"), str(tmp_path)])
    lab = Lab(tmp_path, guard, qemu_dir, [])
    try:
        yield lab
    finally:
        kids = lab.starts()
        guard.kill()
        guard.wait(10)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in lab.procs:
            proc.kill()
            proc.wait(10)


def test_a_renewal_is_answered_with_the_lease_state(lab: Lab) -> None:
    st = lab.renew(lease_s=5)
    assert st["armed"] is False and st["self_fenced"] is False
    assert 0 < st["left_s"] <= 5
    st = lab.ask({"op": "state"})
    assert st["armed"] is False and 0 < st["left_s"] <= 5
    assert lab.renew(armed=True)["armed"] is True  # null lease_s: keeps 5 s


def test_an_agent_that_exits_is_started_again(lab: Lab) -> None:
    wait_for("the agent's first start", lambda: len(lab.starts()) == 1)
    first = lab.starts()[0]
    lab.ask({"op": "exit", "code": 3})
    wait_for("the agent's restart", lambda: len(lab.starts()) == 2)
    assert not alive(first)
    assert lab.guard.poll() is None  # the guard never gives up on it
    assert lab.ask({"op": "state"})["self_fenced"] is False  # the new child talks to it


def test_a_lapsed_armed_lease_kills_the_qemus_and_only_them(lab: Lab) -> None:
    qemu = lab.spawn("vm1")
    other = lab.spawn("not-a-qemu", binary="sleep")
    (lab.qemu_dir / "stale.pid").write_text("999999999")
    st = lab.renew(ago=5, lease_s=1, armed=True)
    assert st["self_fenced"] is True and st["left_s"] < 0
    qemu.wait(WAIT_S)
    assert qemu.returncode == -signal.SIGKILL
    # While lapsed, any QEMU that appears is killed too
    late = lab.spawn("vm2")
    late.wait(WAIT_S)
    assert late.returncode == -signal.SIGKILL
    assert other.poll() is None
    # Renewed: it kills nothing more, and says so
    st = lab.renew(lease_s=30)
    assert st["self_fenced"] is False and st["left_s"] > 0
    back = lab.spawn("vm3")
    time.sleep(1.0)  # several of the guard's ticks
    assert back.poll() is None and other.poll() is None
    assert not (lab.tmp / "left").exists()  # the agent ran all along: no leave


def test_an_unarmed_lease_that_lapses_kills_nothing(lab: Lab) -> None:
    qemu = lab.spawn("vm1")
    st = lab.renew(ago=5, lease_s=1, armed=False)
    assert st["armed"] is False and st["self_fenced"] is False and st["left_s"] < 0
    time.sleep(1.0)  # several of the guard's ticks
    assert qemu.poll() is None
    assert lab.ask({"op": "state"})["self_fenced"] is False


def test_lapsed_with_the_agent_dead_it_leaves_and_rejoins_on_the_engines_renewal(
        lab: Lab) -> None:
    assert lab.renew(ago=5, lease_s=1, armed=True)["self_fenced"] is True
    assert not (lab.tmp / "left").exists()  # the agent runs: it stays a member
    lab.ask({"op": "exit"})
    wait_for("the leave command", (lab.tmp / "left").exists)
    wait_for("the agent's restart", lambda: len(lab.starts()) == 2)
    assert lab.ask({"op": "state"})["self_fenced"] is True  # restarting renews nothing
    assert lab.ask({"op": "renew", "at": time.monotonic(), "by": "quorum"})["self_fenced"] \
        is False
    time.sleep(0.5)
    assert not (lab.tmp / "joined").exists()  # only the engine's word brings it back
    lab.renew()
    wait_for("the join command", (lab.tmp / "joined").exists)


def test_lapsed_with_the_agent_hung_it_leaves_too(lab: Lab) -> None:
    assert lab.renew(lease_s=1, armed=True)["armed"] is True
    time.sleep(1.5)  # lapsed, but the agent talks: it stays a member
    assert lab.ask({"op": "state"})["self_fenced"] is True
    assert not (lab.tmp / "left").exists()
    lab.ask({"op": "hang"})
    wait_for("the leave command", (lab.tmp / "left").exists)
    assert len(lab.starts()) == 1  # a hung agent is left running (the engine fences it)


def test_sigterm_stops_the_agent_then_the_guard(lab: Lab) -> None:
    wait_for("the agent's first start", lambda: len(lab.starts()) == 1)
    lab.ask({"op": "state"})  # it serves
    lab.guard.send_signal(signal.SIGTERM)
    assert lab.guard.wait(WAIT_S) == 0
    assert not alive(lab.starts()[0])


def test_the_guard_imports_nothing_heavy() -> None:
    probe = ("import json, sys; import corral.agent.guard; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('pydantic', 'httpx', 'fastapi', 'typer', 'rich', 'libvirt'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out) == []


def test_a_renewal_from_the_future_counts_from_now() -> None:
    guard = Guard(["true"], lease_s=10)
    now = time.monotonic()
    st = guard.handle({"renew_at": now + 1000, "lease_s": 2, "armed": True, "by": "engine"},
                      now)
    assert st["left_s"] == 2 and st["armed"] is True
    # Nonsense is ignored: the lease stays as it was
    st = guard.handle({"renew_at": "soon", "lease_s": -1, "armed": "yes"}, now)
    assert st["left_s"] == 2 and st["armed"] is True


# -- the agent refuses to start a domain while its lease has lapsed ----------------------

@pytest.fixture
def guard_link(tmp_path: Path) -> Iterator[GuardLink]:
    """A guard serving a link in a thread (its protocol as in the process)."""
    guard = Guard(["true"], qemu_pid_dir=tmp_path)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    guard.sock = ours
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set() and guard.sock is not None:
            guard._serve_socket(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield GuardLink(theirs)
    finally:
        stop.set()
        thread.join(5)
        ours.close()
        theirs.close()


def _agent_routes(tmp_path: Path, link: GuardLink) -> TestClient:
    hv = Hypervisor("test:///default")
    hv.start_gate = lambda: refuse_start_if_fenced(link)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(domain_routes.router(
        hv, Storage(tmp_path / "storage"), tmp_path / "console",
        facts=lambda: HostFacts.model_construct(), after_start=lambda: None))
    return TestClient(app)


def test_a_lapsed_lease_refuses_to_start_or_resume_a_domain(
        tmp_path: Path, guard_link: GuardLink) -> None:
    link = guard_link
    client = _agent_routes(tmp_path, link)
    assert client.post("/v1/domains/test/suspend").json()["state"] == "paused"
    assert link.renew(time.monotonic() - 5, by="engine", lease_s=1, armed=True) is not None
    for action in ("start", "resume"):
        resp = client.post(f"/v1/domains/test/{action}")
        assert resp.status_code == 409
        assert resp.json()["error"]["message"] == REFUSED
    # Renewed by the engine: it may start again
    state = link.renew(time.monotonic(), by="engine", lease_s=10)
    assert state is not None and not state.self_fenced
    resp = client.post("/v1/domains/test/resume")
    assert resp.status_code == 200 and resp.json()["state"] == "running"


def test_without_a_guard_nothing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_GUARD_FD", raising=False)
    assert GuardLink.from_env() is None
    refuse_start_if_fenced(None)


def test_a_guard_that_does_not_answer_gives_none_soon() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        link = GuardLink(theirs, timeout_s=0.2)
        assert link.state() is None
        refuse_start_if_fenced(link)  # no answer: nothing refused
