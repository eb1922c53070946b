"""`corral lab up --storage rbd`: the one-machine Ceph cluster in the lab, registered as pool
`rbd` on every lab host; a running guest whose root disk is an RBD image live-migrates to
the other host (nothing is copied: both hosts open the same image); `lab down` stops its
daemons with the rest."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import LabCli, assert_nothing_left, lab_session, pids_mentioning

pytestmark = pytest.mark.integration

RBD_VM = "rbdmover"


@pytest.fixture(scope="module")
def lab(tiny_cache: Path) -> Iterator[LabCli]:
    # Image `tiny` too (from the cached .debs): the migration test boots a guest on Ceph.
    with lab_session(2, "rbd", 600, "lq", "--deb-cache", str(tiny_cache)) as cli:
        yield cli


@pytest.fixture(scope="module")
def engine(lab: LabCli) -> Iterator[LabEngine]:
    yield from lab_engine(lab)


def test_rbd_pool_is_ready_and_holds_volumes(lab: LabCli) -> None:
    pools = {p["name"]: p for p in lab.json("storage", "pool", "list")}
    assert pools["rbd"]["status"] == "ready" and pools["rbd"]["type"] == "rbd"
    assert pools["rbd"]["capacity"] > 0
    lab.run("volume", "create", "rbd/v1", "--size", "64M")
    volumes = {v["name"]: v for v in lab.json("volume", "list")}
    assert volumes["v1"]["size"] == 64 << 20
    # The Ceph daemons run in the engine's namespace, reachable by every lab host.
    ceph = [p for p in pids_mentioning(str(lab.root / "ceph")) if p]
    assert len(ceph) >= 5  # mon, mgr, 3 OSDs


def _domains(lab: LabCli, n: int) -> list[str]:
    uri = lab.lab_host(host(lab, n)).libvirt_uri()
    return subprocess.run(["virsh", "-c", uri, "list", "--name"], capture_output=True,
                          text=True, timeout=60, check=True).stdout.split()


def _uptime(engine: LabEngine) -> float:
    answer = engine.console_run(RBD_VM, "cut -d' ' -f1 /proc/uptime", timeout=60)
    assert answer.status == 0, answer
    return float(answer.output)


def test_a_guest_on_rbd_live_migrates_without_copying(lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    lab.run("vm", "create", RBD_VM, "--image", "tiny", "--memory", "128M", "--pool", "rbd",
            "--host", h1, "--start", timeout=300)
    try:
        engine.wait_booted(RBD_VM)
        written = engine.console_run(RBD_VM, "echo on-ceph >/root/mark && sync && echo ok",
                                     timeout=60)
        assert written.output == "ok", written
        before = _uptime(engine)
        op = lab.json("vm", "migrate", RBD_VM, "--to", h2)  # no --copy-storage: shared
        assert op["status"] == "success", op
        print(f"\nmigration on rbd: {op['message']}")
        assert RBD_VM in _domains(lab, 2) and RBD_VM not in _domains(lab, 1)
        shown = engine.vm(RBD_VM)
        assert shown["host"] == h2 and shown["state"] == "running" and shown["pool"] == "rbd"
        assert _uptime(engine) > before  # the same guest, not a new boot
        # The disk it runs from now is the same RBD image (its page cache dropped first).
        read = engine.console_run(RBD_VM, "echo 3 >/proc/sys/vm/drop_caches; cat /root/mark",
                                  timeout=60)
        assert read.output == "on-ceph", read
    finally:
        lab.run("vm", "delete", RBD_VM, "--force", check=False, timeout=300)


def test_lab_down_stops_ceph_and_leaves_nothing(lab: LabCli) -> None:
    lab.run("lab", "down", timeout=120)
    assert_nothing_left(lab)
