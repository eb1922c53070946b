"""`corral lab up --storage rbd`: the one-machine Ceph cluster in the lab, registered as pool
`rbd` on every lab host; a running guest whose root disk is an RBD image live-migrates to
the other host (nothing is copied: both hosts open the same image); an HA guest on RBD whose
host loses power runs again on the other host, its old QEMU's Ceph client blocklisted first
(storage fencing); `lab down` stops its daemons with the rest."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import LabCli, assert_nothing_left, lab_session, pids_mentioning
from nodeutil import wait_for

from corral.images.tiny import BOOT_MARKER

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


def _ceph(lab: LabCli, *args: str) -> Any:
    """``ceph``/``rbd`` ARGS --format json, run on host 2 (every lab host reaches Ceph);
    the first JSON document it prints."""
    conf = str(Path(lab.state()["ceph_dir"]) / "ceph.conf")
    out = lab.lab_host(host(lab, 2)).run([args[0], "-c", conf, *args[1:], "--format", "json"],
                                         timeout=60).stdout.strip()
    return json.JSONDecoder().raw_decode(out)[0]


def test_an_ha_vm_on_rbd_restarts_elsewhere_with_its_old_client_blocklisted(
        lab: LabCli, engine: LabEngine) -> None:
    """Power loss of the HA VM's host: before the VM starts on the other host, the old
    QEMU's Ceph client (still listed as the image's watcher: nothing told Ceph it died) is
    blocklisted (services/rbd_fencing.py), so the new QEMU takes the disk's lock at once."""
    h1, h2 = host(lab, 1), host(lab, 2)
    vm, fenced = "rbdha", []
    try:
        lab.run("vm", "create", vm, "--image", "tiny", "--memory", "128M", "--pool", "rbd",
                "--host", h1, "--ha", "--start", timeout=300)
        engine.wait_booted(vm)
        old = [w["address"] for w in _ceph(lab, "rbd", "status", f"rbd/vm.{vm}")["watchers"]]
        assert len(old) == 1, old  # h1's QEMU
        lab.run("lab", "fault", h1, "power-off")
        wait_for(f"{vm} to run on {h2}", lambda: (lambda v: v["state"] == "running" and
                                                   v["host"] == h2)(engine.vm(vm)),
                 timeout=120, every=0.5)
        listed = {e["addr"]: e["until"] for e in _ceph(lab, "ceph", "osd", "blocklist", "ls")}
        fenced = [a for a in old if a in listed]
        assert fenced == old, listed
        # corral's entry (a week), not the one librbd makes when it breaks a dead lock (1 h)
        until = datetime.strptime(listed[old[0]], "%Y-%m-%dT%H:%M:%S.%f%z")
        assert until > datetime.now(UTC) + timedelta(days=1), listed
        new = [w["address"] for w in _ceph(lab, "rbd", "status", f"rbd/vm.{vm}")["watchers"]]
        assert len(new) == 1 and new != old  # h2's QEMU, a client of its own
        wait_for(f"{vm} to boot on {h2}", lambda: BOOT_MARKER in engine.console_log(vm),
                 timeout=180, every=1)
    finally:
        lab.run("lab", "fault", h1, "power-on", check=False, timeout=300)
        lab.run("vm", "delete", vm, "--force", check=False, timeout=300)
        conf = str(Path(lab.state()["ceph_dir"]) / "ceph.conf")
        for address in fenced:
            lab.lab_host(h2).run(["ceph", "-c", conf, "osd", "blocklist", "rm", address],
                                 timeout=60, check=False)


def test_lab_down_stops_ceph_and_leaves_nothing(lab: LabCli) -> None:
    lab.run("lab", "down", timeout=120)
    assert_nothing_left(lab)
