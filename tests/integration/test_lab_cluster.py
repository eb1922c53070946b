"""`corral lab`, for real: an engine and two lab hosts whose agents joined with tokens,
faults (power-off/on, cut-network/heal, kill-agent, kill-libvirtd), and `lab down` leaving
nothing behind, also after a kill -9 of every lab process.

One lab for the module (labutil.lab_session: its own root, names and HOME), driven through
the CLI as a user would; guests are tiny diskless domains defined straight in a lab host's
libvirtd. Traffic stays in the lab's namespaces (10.209.0.0/16).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from labutil import (
    CORRAL,
    LabCli,
    assert_nothing_left,
    lab_dirs,
    lab_session,
    pid_prefix,
    pids_mentioning,
    qemu_pid,
    reachable,
)
from nodeutil import wait_for

from corral.lab import _procs

pytestmark = pytest.mark.integration

TINY_DOMAIN = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><serial type='pty'/></devices>
</domain>
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[LabCli]:
    with lab_session(hosts=2, storage="shared") as cli:
        yield cli


def test_lab_up_hosts_joined_and_up(lab: LabCli) -> None:
    p = lab.prefix
    st = lab.status()
    assert st["engine_pid"] and st["engine_url"].startswith("https://10.209.")
    hosts = {h["name"]: h for h in st["hosts"]}
    assert sorted(hosts) == [f"{p}1", f"{p}2"]
    for h in hosts.values():
        assert h["engine_status"] == "up" and h["agent_pid"] and h["libvirtd_pid"]
    # The CLI talks to the lab now (remote `lab`), and the lab's engine knows both hosts.
    remotes = {r["name"]: r for r in lab.json("remote", "list")}
    assert remotes["lab"]["current"]
    engine_hosts = {h["name"]: h["status"] for h in lab.json("host", "list")}
    assert engine_hosts == {f"{p}1": "up", f"{p}2": "up"}
    pools = {pool["name"]: pool for pool in lab.json("storage", "pool", "list")}
    assert pools["shared"]["status"] == "ready"
    # Each agent holds the identity its join gave it: no token on its command line later.
    assert (lab.root / "hosts" / f"{p}1" / "agent").is_dir()


def test_cut_network_drops_all_traffic_and_heal_restores_it(lab: LabCli) -> None:
    name = f"{lab.prefix}2"
    host = lab.hosts()[name]
    assert reachable(host["address"], 8444)
    lab.run("lab", "fault", name, "cut-network")
    try:
        assert not reachable(host["address"], 8444)
        after = lab.hosts()[name]
        assert after["network"] == "cut"
        assert after["agent_pid"] == host["agent_pid"]  # everything keeps running
        assert after["libvirtd_pid"] == host["libvirtd_pid"]
    finally:
        lab.run("lab", "fault", name, "heal")
    assert reachable(host["address"], 8444)
    assert lab.hosts()[name]["network"] == "ok"


def test_power_off_kills_qemu_and_power_on_boots_the_host_again(lab: LabCli) -> None:
    name = f"{lab.prefix}1"
    host = lab.lab_host(name)
    xml = host.root_dir / "tiny.xml"
    xml.write_text(TINY_DOMAIN.format(name="tiny1"))
    uri = host.libvirt_uri()
    virsh = ["virsh", "-c", uri]
    subprocess.run([*virsh, "define", str(xml)], check=True, capture_output=True, timeout=60)
    subprocess.run([*virsh, "start", "tiny1"], check=True, capture_output=True, timeout=120)
    qemu = qemu_pid(host, "tiny1")
    assert qemu is not None
    before = lab.hosts()[name]

    lab.run("lab", "fault", name, "power-off")
    assert not _procs.is_alive(qemu)
    assert not _procs.is_alive(before["agent_pid"])
    assert not _procs.is_alive(before["libvirtd_pid"])
    off = lab.hosts()[name]
    assert off["powered"] is False and off["agent_pid"] is None and off["libvirtd_pid"] is None
    assert (host.root_dir / "agent").is_dir()  # its disks stay

    lab.run("lab", "fault", name, "power-on", timeout=180)  # waits for the engine's `up`
    on = lab.hosts()[name]
    assert on["powered"] and on["agent_pid"] and on["libvirtd_pid"]
    assert on["engine_status"] == "up"
    state = subprocess.run([*virsh, "domstate", "tiny1"], capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip()
    assert state == "shut off"  # its power was lost


def test_a_killed_agent_is_restarted_by_its_guard_and_power_on_starts_libvirtd(
        lab: LabCli) -> None:
    """The agent runs under its lease guard (`corral agent guard`), which starts it again;
    a killed libvirtd stays dead until `power-on`."""
    name = f"{lab.prefix}2"
    before = lab.hosts()[name]
    lab.run("lab", "fault", name, "kill-agent")
    wait_for("the agent to die", lambda: not _procs.is_alive(before["agent_pid"]), timeout=10)

    def restarted() -> bool:
        now = lab.hosts()[name]
        return bool(now["agent_pid"]) and now["agent_pid"] != before["agent_pid"] \
            and now["engine_status"] == "up"

    wait_for("the guard to restart the agent", restarted, timeout=60)
    lab.run("lab", "fault", name, "kill-libvirtd")
    assert lab.hosts()[name]["libvirtd_pid"] is None
    lab.run("lab", "fault", name, "power-on", timeout=180)
    on = lab.hosts()[name]
    assert on["agent_pid"] and on["libvirtd_pid"] and on["engine_status"] == "up"


def test_bad_fault_and_unknown_host_are_clear_errors(lab: LabCli) -> None:
    bad = lab.run("lab", "fault", f"{lab.prefix}1", "explode", check=False)
    assert bad.returncode == 2 and "power-off" in bad.stderr
    unknown = lab.run("lab", "fault", "nohost9", "power-off", check=False)
    assert unknown.returncode == 2 and "no lab host" in unknown.stderr


def test_a_second_lab_up_on_the_same_root_is_refused(lab: LabCli) -> None:
    again = lab.run("lab", "up", "--hosts", "1", "--prefix", lab.prefix, check=False)
    assert again.returncode == 2 and "a lab is up" in again.stderr
    assert sorted(lab.hosts()) == [f"{lab.prefix}1", f"{lab.prefix}2"]  # untouched


def test_lab_down_after_lab_up_was_killed_halfway_leaves_nothing(lab: LabCli) -> None:
    """kill -9 of `lab up` itself while it builds (a second lab beside the module's)."""
    with lab_dirs(pid_prefix("lr")) as crashed:
        proc = subprocess.Popen([*CORRAL, "lab", "up", "--hosts", "2", "--prefix",
                                 crashed.prefix], env=crashed.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            def building_a_host() -> bool:
                try:
                    return bool(crashed.state()["hosts"])
                except (OSError, ValueError):
                    return False

            wait_for("`lab up` to start a lab host", building_a_host, timeout=120, every=0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert crashed.root.exists()
        crashed.run("lab", "down", timeout=120)
        assert_nothing_left(crashed)
    # The module's lab did not notice.
    assert all(h["engine_status"] == "up" for h in lab.hosts().values())


def test_lab_down_after_kill_9_of_every_lab_process_leaves_nothing(lab: LabCli) -> None:
    st = lab.state()
    hosts = [lab.lab_host(n) for n in st["hosts"]]
    victims = {pid for h in hosts for pid in h.processes()}
    victims.update(pid for h in hosts if (pid := h.daemon_pid("libvirtd")))
    victims.update(pids_mentioning(str(lab.root)))
    victims.add(st["engine"]["pid"])
    holders = [int((h.root_dir / "run" / "holder.pid").read_text()) for h in hosts]
    assert _procs.kill_and_wait([*victims, *holders]) == []
    lab.run("lab", "down", timeout=120)
    assert_nothing_left(lab)
