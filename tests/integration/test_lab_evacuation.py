"""Evacuation for real: a 3-host `corral lab` (shared dir pool `shared`, image `tiny` built
on the first), four tiny guests running on host 1, one of them in a strict anti-affinity
group whose other member (stopped: it keeps its place and its group) is on host 2. Then
`corral host maintenance host1`: the plan sends the group's member to host 3, never host 2;
every guest ends running on host 2 or 3 (libvirt there says so, host 1 has no domain left),
host 1 is in maintenance, and `corral host activate` brings it back up. Then `corral host
reboot host2 --return` with a running and a stopped guest on it: both move off, the lab host
is power-cycled (new libvirtd and agent), comes back, is activated, and both come back.

One lab for the module (its own root, names and HOME; brought down at the end even when a
test fails), driven through the CLI as a user would. Guests are not waited for to boot: a
running domain is what moves, and the two CPUs are shared.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import LabCli, assert_nothing_left, lab_session

pytestmark = pytest.mark.integration

GROUP = "evac-aa"
MEMBER = "ev-a"  # runs on host 1, in GROUP
PARTNER = "ev-p"  # stopped on host 2, in GROUP
VMS = (MEMBER, "ev-b", "ev-c", "ev-d")
RUNNER, SLEEPER = "rb-run", "rb-stop"  # on host 2 through its reboot


@pytest.fixture(scope="module")
def lab(tiny_cache: Path) -> Iterator[LabCli]:
    with lab_session(3, "shared", 600, "lv", "--deb-cache", str(tiny_cache)) as cli:
        yield cli


@pytest.fixture(scope="module")
def engine(lab: LabCli) -> Iterator[LabEngine]:
    yield from lab_engine(lab)


def domains(lab: LabCli, n: int) -> dict[str, str]:
    """Host n's libvirt domains and their states, as virsh lists them."""
    uri = lab.lab_host(host(lab, n)).libvirt_uri()
    out = subprocess.run(["virsh", "-c", uri, "list", "--all"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()[2:] if line.strip()]
    return {r[1]: r[2].strip() for r in rows if len(r) == 3}


def test_maintenance_moves_every_guest_off_and_keeps_anti_affinity(
        lab: LabCli, engine: LabEngine) -> None:
    h1, h2, h3 = host(lab, 1), host(lab, 2), host(lab, 3)
    tiny = ("--image", "tiny", "--pool", "shared")
    lab.run("vm", "group", "create", GROUP, "--policy", "anti-affinity", "--strict")
    try:
        lab.run("vm", "create", PARTNER, *tiny, "--memory", "64M", "--host", h2,
                "--group", GROUP, timeout=300)
        for vm in VMS:
            grouped = ("--group", GROUP) if vm == MEMBER else ()
            lab.run("vm", "create", vm, *tiny, "--memory", "128M", "--host", h1, *grouped,
                    "--start", timeout=300)
        plan = lab.json("host", "maintenance", h1, "--explain")
        assert plan["blocked"] == [], plan
        assert {st["vm"]: st["action"] for st in plan["steps"]} == dict.fromkeys(VMS, "live")
        assert {st["vm"]: st["target"] for st in plan["steps"]}[MEMBER] == h3
        assert engine.host_states()[h1] == "up"  # the dry run changed nothing

        done = lab.run("host", "maintenance", h1, timeout=900)
        assert "moved: " in done.stdout, done.stdout
        assert engine.host_states()[h1] == "maintenance"
        on = {n: domains(lab, n) for n in (1, 2, 3)}
        assert not set(VMS) & set(on[1]), on[1]
        for vm in VMS:
            shown = engine.vm(vm)
            assert shown["state"] == "running" and shown["host"] in (h2, h3), shown
            n = int(shown["host"].removeprefix(lab.prefix))
            assert on[n].get(vm) == "running", (vm, on[n])
        assert engine.vm(MEMBER)["host"] == h3  # never beside its group's member on h2
        assert engine.vm(PARTNER)["host"] == h2

        lab.run("host", "activate", h1, timeout=120)
        assert engine.host_states()[h1] == "up"
    finally:
        for vm in (*VMS, PARTNER):
            lab.run("vm", "delete", vm, "--force", check=False, timeout=300)
        lab.run("vm", "group", "delete", GROUP, check=False)


def pids(lab: LabCli, name: str) -> tuple[int | None, int | None]:
    """The lab host's libvirtd and agent pids (`corral lab status`)."""
    row = next(h for h in lab.json("lab", "status")["hosts"] if h["name"] == name)
    return row["libvirtd_pid"], row["agent_pid"]


def test_reboot_with_return_empties_power_cycles_and_brings_the_vms_back(
        lab: LabCli, engine: LabEngine) -> None:
    h2 = host(lab, 2)
    tiny = ("--image", "tiny", "--pool", "shared", "--memory", "64M", "--host", h2)
    before = pids(lab, h2)
    try:
        lab.run("vm", "create", RUNNER, *tiny, "--start", timeout=300)
        lab.run("vm", "create", SLEEPER, *tiny, timeout=300)
        done = lab.run("host", "reboot", h2, "--return", timeout=900)
        assert "rebooted and active; 2 of 2 VMs back" in done.stdout + done.stderr, done
        after = pids(lab, h2)
        # The machine was power-cycled: its libvirtd and agent are new processes.
        assert None not in after and after[0] != before[0] and after[1] != before[1], after
        assert engine.host_states()[h2] == "up"
        assert engine.vm(RUNNER)["host"] == h2 and engine.vm(RUNNER)["state"] == "running"
        assert engine.vm(SLEEPER)["host"] == h2 and engine.vm(SLEEPER)["state"] == "stopped"
        on = domains(lab, 2)
        assert on.get(RUNNER) == "running" and SLEEPER in on, on
        assert not {RUNNER, SLEEPER} & (set(domains(lab, 1)) | set(domains(lab, 3)))
    finally:
        for vm in (RUNNER, SLEEPER):
            lab.run("vm", "delete", vm, "--force", check=False, timeout=300)


def test_lab_down_leaves_nothing(lab: LabCli) -> None:
    lab.run("lab", "down", timeout=120)
    assert_nothing_left(lab)
