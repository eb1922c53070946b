"""HA without power fencing: a 3-host `corral lab` with corosync's votequorum in every host
(`lab up --quorum`), a shared pool, and NO fence method (`--no-fence`): the only way a lost
host's HA VMs come back is its lease (each host's agent runs under `corral agent guard`,
which kills the host's QEMUs when the lease lapses; the engine recovers them once the host
is out of the quorate membership and silent for ha.lease_s + ha.margin_s).

- Network cut: the cut host's HA VM stops there by itself (self-fence) and only then runs
  on another host; a sampler of every host's QEMU pid files every 100 ms never sees two
  copies; healed, the host comes back `up` without the moved VM's stale domain.
- The agent alone killed: its guard starts it again, the host's VMs keep their QEMUs and
  nothing of the host starts elsewhere.
- The engine stopped for 60 s (`corral lab engine stop|start`): every VM keeps its QEMU,
  and afterwards every host is `up`, every VM `running` where it was.

One lab for the module, brought down at the end even when a test fails; each test heals
what it broke and deletes its VMs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import LabCli, Qemus, domains, lab_session, qemu_pid
from nodeutil import wait_for

from corral.lab import _procs
from corral.lab.host import LabHost

# alone: its HA timing must not compete with the other lane's TCG guests (Makefile)
pytestmark = [pytest.mark.integration, pytest.mark.solo]

TINY = ("--image", "tiny", "--pool", "shared", "--memory", "128M")  # 64M: no boot
LEASE_S, MARGIN_S, DETECT_S = 10.0, 2.0, 3.0  # ha.lease_s, ha.margin_s, ha.detect_s defaults
OUTAGE_S = 60.0  # the engine outage


@pytest.fixture(scope="module")
def lab(tiny_cache: Path) -> Iterator[LabCli]:
    with lab_session(3, "shared", 600, "lw", "--deb-cache", str(tiny_cache), "--no-fence",
                     "--quorum") as cli:
        yield cli


@pytest.fixture(scope="module")
def engine(lab: LabCli) -> Iterator[LabEngine]:
    yield from lab_engine(lab)


def create(lab: LabCli, placed: dict[str, tuple[str, bool]]) -> None:
    """Each VM of ``placed`` (name -> (host, HA)) created and started there, side by side."""
    def one(vm: str) -> None:
        on, ha = placed[vm]
        lab.run("vm", "create", vm, *TINY, "--host", on, *(("--ha",) if ha else ()),
                "--start", timeout=300)

    with ThreadPoolExecutor(len(placed)) as pool:
        list(pool.map(one, placed))


def delete(lab: LabCli, *vms: str) -> None:
    for vm in vms:
        lab.run("vm", "delete", vm, "--force", check=False, timeout=300)


def quorum(engine: LabEngine) -> dict[str, str]:
    """Each host's place in the quorate membership, as `corral ha status` shows it."""
    return {h.name: h.quorum for h in engine.sdk().ha_status().hosts}


def wait_all_in_quorum(lab: LabCli, engine: LabEngine) -> None:
    """corosync formed one quorate membership of every host, and the engine knows it (it
    derives each host's place from its peers' reports)."""
    wait_for("every host in the quorate membership",
             lambda: set(quorum(engine).values()) == {"in"}
             and len(quorum(engine)) == len(lab.hosts()), timeout=90, every=1)


def wait_armed(engine: LabEngine, name: str) -> None:
    """The host's guard enforces its lease (the engine told it the host has HA VMs)."""
    def armed() -> bool:
        return any(h.name == name and h.lease.startswith("armed")
                   for h in engine.sdk().ha_status().hosts)

    wait_for(f"the lease of {name} armed", armed, timeout=30, every=0.5)


def host_list(lab: LabCli) -> dict[str, str]:
    """Hosts' states through the CLI (a fresh connection: after an engine restart too)."""
    return {h["name"]: h["status"] for h in lab.json("host", "list")}


def where(engine: LabEngine, vm: str) -> tuple[str, str | None]:
    """The VM's state and host as the engine's rows say (the SDK's list: `get_vm`, `vm
    show`, ask the VM's host for its guest agent, which hangs while that host is cut off)."""
    shown = next(v for v in engine.sdk().list_vms() if v.name == vm)
    return str(shown.state), shown.host


def agent_pids(host: LabHost) -> list[int]:
    """The lab host's agent processes (`python -m corral.agent ...`; not its guard,
    `python -m corral.agent.guard ... -- AGENT`)."""
    found = []
    for pid in host.processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if argv[1:3] == ["-m", "corral.agent"]:
            found.append(pid)
    return found


def test_a_cut_host_stops_its_ha_vm_itself_before_it_runs_elsewhere(
        lab: LabCli, engine: LabEngine) -> None:
    h3 = host(lab, 3)
    h3_host = lab.lab_host(h3)
    vms = ["cut-ha", "cut-plain"]
    try:
        create(lab, {"cut-ha": (h3, True), "cut-plain": (h3, False)})
        assert lab.json("host", "fence", "show", h3) == []  # only the lease can recover
        wait_all_in_quorum(lab, engine)
        wait_armed(engine, h3)
        old = qemu_pid(h3_host, "cut-ha")
        assert old is not None
        seen_quorum: list[str] = []
        waiting: list[str] = []

        def moved() -> bool:
            st = engine.sdk().ha_status()
            seen_quorum.extend(h.quorum for h in st.hosts if h.name == h3)
            waiting.extend(v.waiting for v in st.vms if v.name == "cut-ha" and v.waiting)
            state, on = where(engine, "cut-ha")
            return state == "running" and on not in (None, h3)

        with Qemus(lab, vms) as watch:
            lab.run("lab", "fault", h3, "cut-network")
            try:
                # Nothing can reach h3: its guard alone stops the QEMU, once the lease lapses.
                wait_for(f"cut-ha's QEMU on {h3} to stop by itself",
                         lambda: not _procs.is_alive(old), timeout=LEASE_S + 20, every=0.2)
                wait_for("cut-ha to run on another host", moved, timeout=60, every=0.5)
                to = where(engine, "cut-ha")[1]
                assert to in (host(lab, 1), host(lab, 2))
                assert "out" in seen_quorum, (seen_quorum, waiting)
                # `corral ha status` said why it waited: the lease it counts down
                assert any("lease" in w for w in waiting), waiting
                assert where(engine, "cut-plain")[1] == h3  # not HA: never started elsewhere
            finally:
                lab.run("lab", "fault", h3, "heal")
            wait_for(f"{h3} up again", lambda: engine.host_states()[h3] == "up",
                     timeout=120, every=0.5)
            # The moved VM's stale domain went before h3 was up; it runs once, on `to`.
            assert "cut-ha" not in domains(lab, h3), domains(lab, h3)
            assert domains(lab, to).get("cut-ha") == "running"
            assert where(engine, "cut-ha")[1] == to
            time.sleep(2)  # a few more samples with h3 back
        assert watch.samples > 100
        assert watch.twice == [], watch.twice[:5]
        # It stopped on h3 before it started on `to`, at no sample on both.
        assert watch.last_on["cut-ha", h3] < watch.first_on["cut-ha", to], watch.copies
        assert {h for h, _ in watch.copies["cut-plain"]} == {h3}, watch.copies
    finally:
        lab.run("lab", "fault", h3, "heal", check=False)
        delete(lab, *vms)


def test_a_killed_agent_is_restarted_and_nothing_of_its_host_moves(
        lab: LabCli, engine: LabEngine) -> None:
    h2 = host(lab, 2)
    h2_host = lab.lab_host(h2)
    vms = ["agent-ha", "agent-plain"]
    try:
        create(lab, {"agent-ha": (h2, True), "agent-plain": (h2, False)})
        wait_all_in_quorum(lab, engine)
        wait_armed(engine, h2)  # its guard holds the lease while the agent is dead
        before = {vm: qemu_pid(h2_host, vm) for vm in vms}
        assert None not in before.values(), before
        killed = agent_pids(h2_host)
        assert len(killed) == 1, killed
        with Qemus(lab, vms) as watch:
            lab.run("lab", "fault", h2, "kill-agent")
            wait_for(f"the guard of {h2} to start its agent again",
                     lambda: [p for p in agent_pids(h2_host) if p not in killed] != [],
                     timeout=60, every=0.5)
            # Watch past the moment a lapsed lease would have let the engine move them.
            end = time.monotonic() + DETECT_S + LEASE_S + MARGIN_S + 3
            while time.monotonic() < end:
                rows = {vm: where(engine, vm)[1] for vm in vms}
                assert rows == dict.fromkeys(vms, h2), rows
                time.sleep(1)
            wait_for(f"{h2} up", lambda: engine.host_states()[h2] == "up", timeout=60,
                     every=0.5)
        assert {vm: qemu_pid(h2_host, vm) for vm in vms} == before
        assert watch.copies == {vm: {(h2, pid)} for vm, pid in before.items()}, watch.copies
        assert watch.nowhere == dict.fromkeys(vms, 0), watch.nowhere
        assert {vm: where(engine, vm) for vm in vms} == dict.fromkeys(vms, ("running", h2))
    finally:
        delete(lab, *vms)


def test_an_engine_outage_of_a_minute_stops_no_vm(lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    placed = {"eng-ha": (h1, True), "eng-ha2": (h2, True), "eng-plain": (h2, False)}
    try:
        create(lab, placed)
        wait_all_in_quorum(lab, engine)
        for on in (h1, h2):
            wait_armed(engine, on)
        before = {vm: qemu_pid(lab.lab_host(on), vm) for vm, (on, _) in placed.items()}
        assert None not in before.values(), before
        with Qemus(lab, list(placed), every_s=1.0) as watch:
            lab.run("lab", "engine", "stop", timeout=60)
            try:
                time.sleep(OUTAGE_S)  # the outage; the sampler looks every second meanwhile
            finally:
                lab.run("lab", "engine", "start", timeout=240)
            wait_for("every host up after the engine's restart",
                     lambda: set(host_list(lab).values()) == {"up"}, timeout=120, every=2)
        assert watch.samples >= OUTAGE_S - 5
        assert watch.copies == {vm: {(placed[vm][0], pid)} for vm, pid in before.items()}, \
            watch.copies
        assert watch.nowhere == dict.fromkeys(placed, 0), watch.nowhere
        for vm, (on, _) in placed.items():
            shown = lab.json("vm", "show", vm)
            assert (shown["state"], shown["host"]) == ("running", on), shown
    finally:
        lab.run("lab", "engine", "start", check=False, timeout=240)  # refused when it runs
        delete(lab, *placed)

