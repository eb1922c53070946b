"""Helpers of the `corral lab` tests: the CLI of one lab with its own root, names and HOME,
what a user would check after `lab down`, and a lab per module (:func:`lab_session`)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import pytest

from corral.lab import _procs
from corral.lab.host import LabHost

CORRAL = [sys.executable, "-m", "corral.cli.main"]


def xdist_worker() -> int:
    """This pytest process's xdist worker number (make test's lanes: gw0, gw1); 0 alone."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def lab_index_base() -> int:
    """Where this pytest process's labs count their indexes from: 50, and 20 further on per
    xdist worker (gw1: 70), so that two labs coming up at once on two workers never probe
    the same free index (the node fixture uses 100-199, test_lab_host 200 and up)."""
    return 50 + 20 * xdist_worker()


class LabCli:
    def __init__(self, root: Path, home: Path, prefix: str) -> None:
        self.root, self.home, self.prefix = root, home, prefix
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("CORRAL_")}
        self.env.update(HOME=str(home), CORRAL_LAB_ROOT=str(root),
                        CORRAL_LAB_INDEX_BASE=str(lab_index_base()), COLUMNS="200")

    def run(self, *args: str, check: bool = True, timeout: float = 300,
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*CORRAL, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--output", "json").stdout)

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = self.json("lab", "status")
        return st

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {h["name"]: h for h in self.status()["hosts"]}

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "lab.json").read_text())
        return data

    def lab_host(self, name: str) -> LabHost:
        rec = self.state()["hosts"][name]
        host = LabHost(name, rec["index"], Path(rec["root_dir"]))
        host.attach()
        return host


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=False).stdout


def reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and _procs.is_alive(int(entry)):
            found.append(int(entry))
    return found


def qemu_pid(host: LabHost, vm: str) -> int | None:
    try:
        pid = int((host.root_dir / "run" / "libvirt" / "qemu" / f"{vm}.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if _procs.is_alive(pid) else None


def assert_nothing_left(lab: LabCli) -> None:
    """What a user would check: no namespace, veth, router link, bridge, process or
    directory of the lab (its nftables tables lived in its namespaces)."""
    p = lab.prefix
    assert [n for n in _ip("netns", "list").split() if n.startswith(f"corral-{p}")] == []
    links = [link["ifname"] for link in json.loads(_ip("-j", "link", "show") or "[]")]
    assert [n for n in links if n.startswith((f"crl-{p}", "crlab"))] == []
    if "corral-lab-router" in _ip("netns", "list").split():
        rlinks = json.loads(_ip("-j", "-n", "corral-lab-router", "link", "show") or "[]")
        assert [r["ifname"] for r in rlinks if r["ifname"].startswith(f"crr-{p}")] == []
    assert pids_mentioning(str(lab.root)) == []
    assert not lab.root.exists()
    remotes = lab.home / ".config" / "corral" / "remotes.json"
    if remotes.exists():
        cfg = json.loads(remotes.read_text())
        assert "lab" not in cfg["remotes"] and cfg["current"] == "local"


def pid_prefix(first: str) -> str:
    """``first`` and two letters drawn from our pid, none a hex digit (so never a name of
    test_lab_host's ``t<hex>`` hosts or the node fixture's ``n<hex>``)."""
    letters = "ghijklmnopqrstuvwxyz"
    pid = os.getpid()
    return first + letters[pid % 20] + letters[(pid // 20) % 20]


@contextmanager
def lab_dirs(prefix: str) -> Iterator[LabCli]:
    """A LabCli with a root of its own under /var/tmp (QEMU must traverse to the lab hosts'
    disks), lab indexes from lab_index_base() (the node fixture uses 100-199, test_lab_host 200 and up)
    and HOME a temporary directory (the remotes `lab up` adds are not the user's); at the
    end `corral lab down` (a no-op when the test did it) and the directory's removal."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (namespaces, libvirtd); run them as root")
    base = Path(tempfile.mkdtemp(prefix="corral-lab-it-", dir="/var/tmp"))
    base.chmod(0o711)
    cli = LabCli(base / "lab", base / "home", prefix)
    (base / "home").mkdir()
    try:
        yield cli
    finally:
        cli.run("lab", "down", "--prefix", prefix, check=False, timeout=120)
        keep_logs(base, prefix)
        shutil.rmtree(base, ignore_errors=True)


def keep_logs(base: Path, prefix: str) -> None:
    """With CORRAL_TEST_KEEP_LOGS=DIR, the lab's logs (engine, agents, libvirtd, corosync)
    are copied to DIR/PREFIX before its directory goes: what to read after a failure."""
    keep = os.environ.get("CORRAL_TEST_KEEP_LOGS")
    if not keep:
        return
    for log in base.rglob("*.log"):
        if log.is_file():
            dest = Path(keep) / prefix / log.relative_to(base)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, dest)


@contextmanager
def lab_session(hosts: int, storage: str, up_timeout: float = 400, first: str = "lq",
                *up_args: str) -> Iterator[LabCli]:
    """`corral lab up` (prefix ``<first><2 letters>``; ``up_args`` added, else
    ``--no-image``: most lab tests need no guest image), brought down at the end."""
    with lab_dirs(pid_prefix(first)) as cli:
        cli.run("lab", "up", "--hosts", str(hosts), "--storage", storage, "--prefix",
                cli.prefix, *(up_args or ("--no-image",)), timeout=up_timeout)
        yield cli


class Sampling:
    """:meth:`sample` every ``every_s`` on a thread of its own while the ``with`` block runs
    (bounded by ``limit_s``): watchers of what must never happen, even for a moment."""

    def __init__(self, every_s: float, limit_s: float) -> None:
        self.every_s, self.limit_s = every_s, limit_s
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        end = time.monotonic() + self.limit_s
        while not self._stop.wait(self.every_s) and time.monotonic() < end:
            self.samples += 1
            self.sample()


class Qemus(Sampling):
    """Never two copies, watched: reads every lab host's QEMU pid file of each VM every
    ``every_s``; each (host, pid) a VM's QEMU was seen with, the samples where it ran on two
    hosts at once (``twice``) and those where it ran nowhere, and when it was last seen on /
    first seen on each host."""

    def __init__(self, lab: LabCli, vms: list[str], every_s: float = 0.1,
                 limit_s: float = 600) -> None:
        super().__init__(every_s, limit_s)
        self.hosts = [lab.lab_host(name) for name in sorted(lab.hosts())]
        self.vms = vms
        self.copies: dict[str, set[tuple[str, int]]] = {vm: set() for vm in vms}
        self.twice: list[tuple[float, str, list[str]]] = []
        self.nowhere: dict[str, int] = {vm: 0 for vm in vms}
        self.last_on: dict[tuple[str, str], float] = {}  # (vm, host) -> last sample alive
        self.first_on: dict[tuple[str, str], float] = {}  # (vm, host) -> first sample alive

    def sample(self) -> None:
        now = time.monotonic()
        for vm in self.vms:
            alive = [(h.name, pid) for h in self.hosts if (pid := qemu_pid(h, vm)) is not None]
            self.copies[vm].update(alive)
            for name, _ in alive:
                self.last_on[vm, name] = now
                self.first_on.setdefault((vm, name), now)
            if len(alive) > 1:
                self.twice.append((now, vm, [name for name, _ in alive]))
            if not alive:
                self.nowhere[vm] += 1


def domains(lab: LabCli, name: str) -> dict[str, str]:
    """`virsh list --all` of a lab host: domain -> state."""
    uri = lab.lab_host(name).libvirt_uri()
    out = subprocess.run(["virsh", "-c", uri, "list", "--all"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()[2:] if line.strip()]
    return {r[1]: r[2].strip() for r in rows if len(r) == 3}
