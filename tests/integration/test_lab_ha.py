"""High availability for real: a 3-host `corral lab` (shared pool `shared`, image `tiny`,
every host fenced by the lab's own fence agent `fence_corral_lab`, which `corral lab up`
configures), tiny guests made HA with priorities.

- Power off host 1 (`corral lab fault power-off`: every process of the host killed at
  once, as a power loss): the engine loses it, fences it (the fence agent confirms it off),
  and its HA VMs run on the other hosts, the higher priority first, and boot there (their
  boot marker on the serial console); a non-HA VM stays down on host 1. A sampler reads
  every lab host's QEMU pid files every 100 ms through all of it: never one VM's QEMU alive
  on two hosts. Host 1 powered on again: it starts none of the VMs that moved, and loses
  their stale definitions before it is up.
- A fence method that cannot confirm: the HA VM stays down, `corral ha status` says why;
  once the method is mended, the next try confirms and the VM runs elsewhere.

- The lab engine's fence agent reads a host's power, powers it off and on (`corral host
  power`).

One lab for the module, brought down at the end even when a test fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import LabCli, Qemus, domains, lab_session
from nodeutil import wait_for

from corral.images.tiny import BOOT_MARKER

# alone: its HA timing must not compete with the other lane's TCG guests (Makefile)
pytestmark = [pytest.mark.integration, pytest.mark.solo]

TINY = ("--image", "tiny", "--pool", "shared", "--memory", "128M")  # 64M: no boot


@pytest.fixture(scope="module")
def lab(tiny_cache: Path) -> Iterator[LabCli]:
    # Power fencing alone decides here (no quorum provider, so no lease path): what a fence
    # that cannot confirm does is seen as it is. test_lab_quorum_ha covers quorum.
    with lab_session(3, "shared", 600, "la", "--deb-cache", str(tiny_cache),
                     "--no-quorum") as cli:
        yield cli


@pytest.fixture(scope="module")
def engine(lab: LabCli) -> Iterator[LabEngine]:
    yield from lab_engine(lab)


def runs_elsewhere(engine: LabEngine, vm: str, lost: str) -> bool:
    shown = engine.vm(vm)
    return bool(shown["state"] == "running" and shown["host"] != lost)


def recoveries(engine: LabEngine) -> list[str]:
    ops = [o for o in engine.sdk().list_operations() if o.type == "vm.recover"]
    ops.sort(key=lambda o: o.created_at)
    return [o.resources["vms"][0] for o in ops]


def test_the_lab_engine_fences_a_lab_host_off_and_powers_it_on(lab: LabCli) -> None:
    """`corral lab up` gave each host fence_corral_lab; the engine runs it (in its own
    namespaces) to read a host's power, power it off (every process of it gone) and on."""
    name = host(lab, 3)
    methods = lab.json("host", "fence", "show", name)
    assert [(m["agent"], m["options"]["plug"]) for m in methods] == [
        ("fence_corral_lab", name)]
    assert lab.json("host", "fence", "test", name)["checks"][0]["power"] == "on"

    lab.run("host", "power", name, "off", timeout=120)
    assert lab.lab_host(name).processes() == []  # its libvirtd and agent are gone
    off = lab.run("host", "power", name, "status", "-o", "json", check=False)
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["checks"][0]["power"] == "off"

    lab.run("host", "power", name, "on", timeout=120)
    assert lab.lab_host(name).processes() != []
    wait_for(f"{name} up again", lambda: lab.json("host", "show", name)["status"] == "up",
             timeout=90, every=1)


def test_power_loss_fences_the_host_and_its_ha_vms_run_elsewhere_by_priority(
        lab: LabCli, engine: LabEngine) -> None:
    h1 = host(lab, 1)
    ha = {"ha-hi": "10", "ha-lo": "1"}
    try:
        for vm, prio in ha.items():
            lab.run("vm", "create", vm, *TINY, "--host", h1, "--ha", "--ha-priority", prio,
                    "--start", timeout=300)
        lab.run("vm", "create", "ha-plain", *TINY, "--host", h1, "--start", timeout=300)
        assert lab.json("host", "fence", "show", h1), "lab up configured no fence method"
        with Qemus(lab, [*ha, "ha-plain"]) as sampler:
            lab.run("lab", "fault", h1, "power-off")
            for vm in ha:
                wait_for(f"{vm} to run on another host",
                         lambda vm=vm: runs_elsewhere(engine, vm, h1), timeout=120, every=0.5)
            assert engine.host_states()[h1] == "down"  # fenced: known to be off
            assert recoveries(engine) == ["ha-hi", "ha-lo"]
            plain = engine.vm("ha-plain")
            assert plain["host"] == h1 and plain["state"] == "stopped", plain
            wait_for("ha-hi to boot on its new host",
                     lambda: BOOT_MARKER in engine.console_log("ha-hi"), timeout=180, every=1)
            # and a DHCP address: h1 served the overlay `default`, a surviving host does now
            engine.wait_booted("ha-hi", timeout=120)
            moved = {vm: engine.vm(vm)["host"] for vm in ha}
            lab.run("lab", "fault", h1, "power-on", timeout=300)
            wait_for(f"{h1} up again", lambda: engine.host_states()[h1] == "up",
                     timeout=120, every=0.5)
            on_h1 = domains(lab, h1)
            assert not set(ha) & set(on_h1), on_h1  # stale copies gone before it was up
            assert on_h1.get("ha-plain") == "shut off", on_h1
            for vm, where in moved.items():
                assert engine.vm(vm)["host"] == where
                assert domains(lab, where).get(vm) == "running"
            time.sleep(2)  # a few more samples with h1 back
        assert sampler.samples > 100
        assert sampler.twice == [], sampler.twice[:5]
    finally:
        for vm in (*ha, "ha-plain"):
            lab.run("vm", "delete", vm, "--force", check=False, timeout=300)


def test_a_fence_that_cannot_confirm_keeps_the_vm_down_until_it_can(
        lab: LabCli, engine: LabEngine) -> None:
    h2 = host(lab, 2)
    root = lab.state()["root"]
    try:
        lab.run("vm", "create", "ha-wait", *TINY, "--host", h2, "--ha", "--start",
                timeout=300)
        lab.run("host", "fence", "remove", h2)
        lab.run("host", "fence", "set", h2, "--agent", "fence_corral_lab",
                "--option", "root=/nonexistent/lab", "--option", f"plug={h2}")
        lab.run("lab", "fault", h2, "power-off")

        def waiting() -> str:
            st = lab.json("ha", "status")
            return next(v["waiting"] or "" for v in st["vms"] if v["name"] == "ha-wait")

        wait_for("ha status to say why ha-wait waits", lambda: "fenc" in waiting(),
                 timeout=60, every=0.5)
        assert engine.vm("ha-wait")["host"] == h2
        text = lab.run("ha", "status").stdout
        assert "ha-wait" in text and "failed" in text, text
        lab.run("host", "fence", "remove", h2)
        lab.run("host", "fence", "set", h2, "--agent", "fence_corral_lab",
                "--option", f"root={root}", "--option", f"plug={h2}")
        wait_for("ha-wait to run on another host",
                 lambda: runs_elsewhere(engine, "ha-wait", h2), timeout=120, every=0.5)
    finally:
        lab.run("vm", "delete", "ha-wait", "--force", check=False, timeout=300)
        lab.run("lab", "fault", h2, "power-on", check=False, timeout=300)
