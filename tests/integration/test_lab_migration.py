"""Live migration for real: a 2-host `corral lab` (shared dir pool `shared` on both, image
`tiny` built on the first), a tiny guest whose root disk is in the shared pool started on
host 1 and counting on its serial console, moved with `corral vm migrate --to host2` while
it runs and a second guest pings it over the lab's VXLAN network. Then host 2's libvirtd
runs it, host 1 has no domain of it, `vm show` names host 2, the guest kept running (its
uptime went on, its counter continues on host 2's console with no gap beyond the downtime),
the ping lost at most two packets and the operation reports the downtime libvirt measured.

Then what must not break a guest: a cancel, a security group (still enforced after the
move), the target's libvirtd killed mid-migration (the guest stays on the source, one copy,
nothing on the target), a full target (refused before anything moves), the engine
killed mid-migration (once restarted, the guest runs on exactly one host, the one its
row names); and a stopped VM moved offline (`--offline`: its disk copied, started on
host 2 with its data). Then how it travels: TLS on the wire by default, plain with
`migration.tls off`, the `migration.network`, and `migration.converge_s`.

One lab for the module (its own root, names and HOME; brought down at the end even when a
test fails), driven through the CLI as a user would.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import CORRAL, LabCli, assert_nothing_left, lab_session, qemu_pid
from nodeutil import wait_for
from streamsniff import TLS_HANDSHAKE, sniffing

from corral.lab import _procs
from corral.lab import state as lab_state
from corral.lab.cluster import LAB_BRIDGE, LAB_SUBNET

pytestmark = pytest.mark.integration

VM = "mover"
PINGER = "pinger"  # a second guest on network `default` (VXLAN over both hosts)
LOCAL = "local"
HOG = "hog"
COLD = "cold"  # a stopped VM moved offline
SG = "mig-ssh"
SEALED = "sealed"  # the TLS tests' guest
QEVM = b"QEVM".hex()
TICK = re.compile(r"MIGTICK (\d+)")
SEQ = re.compile(r"seq=(\d+)")


@pytest.fixture(scope="module")
def lab(tiny_cache: Path) -> Iterator[LabCli]:
    with lab_session(2, "shared", 600, "lm", "--deb-cache", str(tiny_cache)) as cli:
        yield cli


@pytest.fixture(scope="module")
def engine(lab: LabCli) -> Iterator[LabEngine]:
    yield from lab_engine(lab)


def virsh(lab: LabCli, n: int, *args: str) -> str:
    uri = lab.lab_host(host(lab, n)).libvirt_uri()
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          timeout=60, check=True).stdout


def uptime(engine: LabEngine) -> float:
    answer = engine.console_run(VM, "cut -d' ' -f1 /proc/uptime", timeout=60)
    assert answer.status == 0, answer
    return float(answer.output)


def ticks(engine: LabEngine) -> list[int]:
    return [int(n) for n in TICK.findall(engine.console_log(VM))]


def console_file(lab: LabCli, n: int, vm: str) -> Path:
    """Where host n's agent keeps VM's serial console log (the source's stays after a move)."""
    root = Path(lab.state()["hosts"][host(lab, n)]["root_dir"])
    return root / "agent" / "console" / f"{vm}.log"


def guest_ok(engine: LabEngine, vm: str, command: str) -> bool:
    """Whether ``command`` succeeds in the guest (typed on its serial console)."""
    answer = engine.console_run(vm, f"{command} >/dev/null 2>&1 && echo yes || echo no",
                                timeout=60)
    return answer.output == "yes"


def pings(engine: LabEngine, target: str) -> bool:
    return guest_ok(engine, PINGER, f"ping -c 2 -W 2 {target}")


def ssh_banner(engine: LabEngine, target: str) -> str:
    """The first bytes the guest's SSH server (dropbear) sends, as the pinger reads them."""
    return engine.console_run(PINGER, f"echo | nc -w 5 {target} 22 | head -c 7",
                              timeout=60).output


def largest_gap(numbers: list[int]) -> int:
    """How many consecutive numbers are missing at most between the first and the last."""
    seen = sorted(set(numbers))
    return max((b - a - 1 for a, b in itertools.pairwise(seen)), default=0)


def test_a_running_guest_moves_to_host2_and_keeps_running(
        lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    for vm in (VM, PINGER):
        lab.run("vm", "create", vm, "--image", "tiny", "--memory", "128M", "--pool", "shared",
                "--host", h1, "--start", timeout=300)
    assert engine.vm(VM)["host"] == h1 and engine.vm(VM)["pool"] == "shared"
    address = engine.wait_booted(VM)
    engine.wait_booted(PINGER)
    # A counter on the serial console, once a second, detached from the typed command.
    started = engine.console_run(
        VM, "sh -c 'i=0; while true; do i=$((i+1)); echo MIGTICK $i >/dev/ttyS0; sleep 1;"
        " done' </dev/null >/dev/null 2>&1 & echo started", timeout=60)
    assert started.output == "started", started
    wait_for("the counter to tick", lambda: len(ticks(engine)) >= 3, timeout=60, every=1)
    # The second guest pings it twice a second through the move (until told to stop).
    wait_for(f"{PINGER} to reach {VM}", lambda: pings(engine, address), timeout=60)
    ping = engine.console_run(
        PINGER, f"ping -i 0.5 {address} </dev/null >/tmp/ping.log 2>&1 & echo $! >/tmp/ping.pid;"
        " echo pinging", timeout=60)
    assert ping.output == "pinging", ping
    before = uptime(engine)
    last_on_h1 = max(ticks(engine))

    op = lab.json("vm", "migrate", VM, "--to", h2)  # waits; the operation as it ended
    assert op["status"] == "success" and op["type"] == "vm.migrate", op
    message = op["message"]
    print(f"\nmigration: {message}")
    assert message.startswith(f"migrated from {h1} to {h2}: downtime "), message
    downtime = int(re.search(r"downtime (\d+) ms", message).group(1))  # type: ignore[union-attr]
    assert downtime >= 0

    # Where it runs: host 2's libvirtd, defined there (persistent); nothing on host 1.
    assert virsh(lab, 2, "domstate", VM).strip() == "running"
    assert "yes" in virsh(lab, 2, "dominfo", VM).split("Persistent:")[1].split("\n")[0]
    assert VM not in virsh(lab, 1, "list", "--all", "--name").split()
    assert engine.vm(VM)["host"] == h2 and engine.vm(VM)["state"] == "running"

    # The same guest, not a new boot: its uptime went on and its counter continues on the
    # console of host 2 (a new log there: the numbers pick up where host 1's stopped).
    assert uptime(engine) > before
    wait_for("the counter to tick on host 2",
             lambda: any(n > last_on_h1 + 3 for n in ticks(engine)), timeout=60, every=1)
    assert min(ticks(engine)) > 1  # no restart from 1
    # Host 1's log (what it printed up to the switch) and host 2's together: every second's
    # number, but for at most the downtime (rounded up) and the line in flight.
    on_h1 = [int(n) for n in TICK.findall(console_file(lab, 1, VM).read_text(errors="replace"))]
    counted = on_h1 + ticks(engine)
    gap = largest_gap(counted)
    print(f"counter: {min(counted)}..{max(counted)}, largest gap {gap}")
    assert gap <= math.ceil(downtime / 1000) + 1, sorted(set(counted))

    # The pinger's view: stopped (SIGINT), every echo request numbered; the replies it got.
    stopped = engine.console_run(PINGER, "kill -INT $(cat /tmp/ping.pid); sleep 1;"
                                 " grep -o 'seq=[0-9]*' /tmp/ping.log", timeout=60)
    replies = [int(n) for n in SEQ.findall(stopped.output)]
    assert replies, stopped
    lost = max(replies) + 1 - len(set(replies))  # seq counts from 0
    print(f"ping: {len(set(replies))} replies of {max(replies) + 1}, {lost} lost")
    assert lost <= 2, sorted(set(replies))

    # The reconciler accepts the move: the VM stays on host 2, running, one copy.
    shown = engine.vm(VM)
    assert shown["host"] == h2 and shown["state"] == "running"
    assert VM not in virsh(lab, 1, "list", "--all", "--name").split()


def test_its_own_host_is_refused_before_anything_moves(lab: LabCli, engine: LabEngine) -> None:
    same = lab.run("vm", "migrate", VM, "--to", host(lab, 2), check=False)
    assert same.returncode == 2 and "already runs on host" in same.stderr
    assert engine.vm(VM)["host"] == host(lab, 2)


def test_a_cancelled_migration_leaves_the_guest_running_where_it_was(
        lab: LabCli, engine: LabEngine) -> None:
    before = uptime(engine)
    # Throttled to 1 MiB/s: it runs long enough to be cancelled midway.
    op = lab.json("vm", "migrate", VM, "--to", host(lab, 1), "--bandwidth", "1", "--no-wait")
    sdk = engine.sdk()
    wait_for("the migration's progress",
             lambda: "MiB of" in (sdk.get_operation(op["id"]).message or ""), timeout=120,
             every=0.5)
    lab.run("operation", "cancel", op["id"])
    ended = sdk.wait_quiet(op["id"], timeout=180)
    assert ended.status.value == "cancelled", ended
    assert virsh(lab, 2, "domstate", VM).strip() == "running"
    assert VM not in virsh(lab, 1, "list", "--all", "--name").split()  # nothing left there
    assert engine.vm(VM)["host"] == host(lab, 2)
    assert uptime(engine) > before  # the same guest, still running


def test_without_a_target_the_scheduler_picks_the_other_host(
        lab: LabCli, engine: LabEngine) -> None:
    op = lab.json("vm", "migrate", VM)
    assert op["status"] == "success", op
    print(f"\nmigration back: {op['message']}")
    assert engine.vm(VM)["host"] == host(lab, 1)
    assert virsh(lab, 1, "domstate", VM).strip() == "running"
    assert VM not in virsh(lab, 2, "list", "--all", "--name").split()


def test_a_security_group_still_protects_the_guest_after_the_move(
        lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    assert engine.vm(VM)["host"] == h1
    address = engine.wait_booted(VM)
    mac = lab.json("vm", "nic", "list", VM)[0]["mac"]
    lab.run("sg", "create", SG, "--description", "ssh only")
    try:
        lab.run("sg", "rule", "add", SG, "--direction", "ingress", "--protocol", "tcp",
                "--port", "22")
        lab.run("vm", "nic", "update", VM, mac, "--security-group", SG)
        assert not pings(engine, address)  # icmp is not allowed in
        assert ssh_banner(engine, address) == "SSH-2.0"  # tcp/22 is

        op = lab.json("vm", "migrate", VM, "--to", h2)
        assert op["status"] == "success", op
        assert engine.vm(VM)["host"] == h2
        # On host 2 (the pinger stayed on host 1: across the VXLAN now), the same rules.
        assert ssh_banner(engine, address) == "SSH-2.0"
        assert not pings(engine, address)
        nics = lab.json("vm", "nic", "list", VM)
        assert nics[0]["mac"] == mac and nics[0]["security_groups"] == [SG]
    finally:
        lab.run("vm", "nic", "update", VM, mac, "--no-security-groups", check=False)
        lab.run("sg", "delete", SG, check=False)
    assert pings(engine, address)  # the group gone, the guest answers pings again


def test_a_root_disk_on_the_hosts_storage_moves_with_copy_storage(
        lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    lab.run("vm", "create", LOCAL, "--image", "tiny", "--memory", "128M", "--host", h1,
            "--start", timeout=300)
    try:
        engine.wait_booted(LOCAL)
        refused = lab.run("vm", "migrate", LOCAL, "--to", h2, check=False)
        assert refused.returncode == 2 and "--copy-storage" in refused.stderr, refused.stderr
        marker = engine.console_run(LOCAL, "echo kept >/root/mark && sync && echo ok",
                                    timeout=60)
        assert marker.output == "ok", marker
        op = lab.json("vm", "migrate", LOCAL, "--to", h2, "--copy-storage")
        assert op["status"] == "success", op
        print(f"\nmigration with storage copy: {op['message']}")
        assert virsh(lab, 2, "domstate", LOCAL).strip() == "running"
        assert LOCAL not in virsh(lab, 1, "list", "--all", "--name").split()
        assert engine.vm(LOCAL)["host"] == h2
        assert _disk(lab, 2, LOCAL).exists() and not _disk(lab, 1, LOCAL).exists()
        # What the guest wrote before the move is on the copy it runs from now (read from
        # the disk: its page cache, which moved with its memory, dropped first).
        read = engine.console_run(LOCAL, "echo 3 >/proc/sys/vm/drop_caches; cat /root/mark",
                                  timeout=60)
        assert read.output == "kept", read
    finally:
        lab.run("vm", "delete", LOCAL, "--force", check=False, timeout=300)


def _disk(lab: LabCli, n: int, vm: str) -> Path:
    root = Path(lab.state()["hosts"][host(lab, n)]["root_dir"])
    return root / "agent" / "storage" / "vms" / f"{vm}.qcow2"


def test_the_targets_libvirtd_killed_midway_leaves_the_guest_on_the_source(
        lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    assert engine.vm(VM)["host"] == h2
    before = uptime(engine)
    op = lab.json("vm", "migrate", VM, "--to", h1, "--bandwidth", "1", "--no-wait")
    sdk = engine.sdk()
    try:
        wait_for("the migration's progress",
                 lambda: "MiB of" in (sdk.get_operation(op["id"]).message or ""), timeout=120,
                 every=0.5)
        print("\n" + lab.run("lab", "fault", h1, "kill-libvirtd").stdout.strip())
        ended = sdk.wait_quiet(op["id"], timeout=180)
    finally:
        if lab.hosts()[h1]["libvirtd_pid"] is None:
            lab.run("lab", "fault", h1, "power-on", timeout=180)
    assert ended.status.value == "failure", ended
    print(f"error: {ended.error}")
    assert ended.error and VM in str(ended.error["message"]), ended.error
    # The guest runs on host 2, the same one (its uptime went on), and the engine says so.
    assert virsh(lab, 2, "domstate", VM).strip() == "running"
    assert engine.vm(VM)["host"] == h2 and engine.vm(VM)["state"] == "running"
    assert uptime(engine) > before
    # Host 1's libvirtd, started again, has no copy: no domain, no QEMU of it.
    wait_for(f"{h1} to be up again", lambda: engine.host_states()[h1] == "up", timeout=120,
             every=1)
    h1_host = lab.lab_host(h1)
    wait_for(f"no QEMU of {VM} on {h1}", lambda: qemu_pid(h1_host, VM) is None, timeout=60,
             every=1)
    assert VM not in virsh(lab, 1, "list", "--all", "--name").split()
    assert engine.vm(PINGER)["state"] == "running"  # its QEMU outlived the libvirtd


def test_a_full_target_is_refused_before_anything_moves(
        lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    assert engine.vm(VM)["host"] == h2
    target = next(h for h in lab.json("host", "list") if h["name"] == h1)
    # A stopped VM keeps its place: one that takes all but 64 MiB of host 1's memory.
    free = target["memory_mib"] - target["allocated"]["memory_mib"]
    lab.run("vm", "create", HOG, "--image", "tiny", "--memory", f"{free - 64}M", "--pool",
            "shared", "--host", h1, timeout=300)
    try:
        refused = lab.run("vm", "migrate", VM, "--to", h1, check=False)
        print(f"\n{refused.stderr.strip()}")
        assert refused.returncode == 2, refused
        assert f"host {h1} cannot take VM {VM}" in refused.stderr
        assert "memory: needs 128 MiB" in refused.stderr and "MiB free" in refused.stderr
        # Nothing moved, nothing started there.
        assert engine.vm(VM)["host"] == h2
        assert virsh(lab, 2, "domstate", VM).strip() == "running"
        assert VM not in virsh(lab, 1, "list", "--all", "--name").split()
        ops = [o for o in lab.json("operation", "list") if o["type"] == "vm.migrate"
               and o["status"] in ("pending", "running")]
        assert ops == []
    finally:
        lab.run("vm", "delete", HOG, "--force", check=False, timeout=300)


def copying(engine: LabEngine, op_id: str) -> bool:
    """Whether the migration reports memory being copied; fails at once if it ended."""
    op = engine.sdk().get_operation(op_id)
    assert not op.status.done, f"the migration ended before it was interrupted: {op}"
    return "MiB of" in (op.message or "")


def restart_engine(lab: LabCli, engine: LabEngine) -> int:
    """SIGKILL the lab's engine and start it again as `lab up` did (same data dir, address,
    namespace); the new pid recorded in the lab's state (`lab down` stops that one)."""
    st = lab_state.load(lab.root)
    assert st is not None and st.engine is not None and st.engine.pid is not None
    assert _procs.kill_and_wait([st.engine.pid]) == []
    if engine._sdk is not None:  # its connections went with the old process
        engine._sdk.close()
        engine._sdk = None
    e = st.engine
    up = subprocess.run(["nsenter", f"--net=/run/netns/{e.netns}", "--", *CORRAL, "up",
                         "--data-dir", e.data_dir, "--listen", e.address, "--port",
                         str(e.port), "--no-local-agent", "--subnet", LAB_SUBNET, "--bridge",
                         LAB_BRIDGE, "--detach"], env=lab.env, capture_output=True, text=True,
                        timeout=180, check=False)
    assert up.returncode == 0, up.stderr
    e.pid = int((Path(e.data_dir) / "engine.pid").read_text().strip())
    lab_state.save(st)
    return e.pid


def test_an_engine_killed_midway_finds_the_guest_on_one_host(
        lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    assert engine.vm(VM)["host"] == h2
    before = uptime(engine)
    # Throttled (128 MiB at 4 MiB/s: half a minute) so that the engine dies in the middle.
    op = lab.json("vm", "migrate", VM, "--to", h1, "--bandwidth", "4", "--no-wait")
    wait_for("the migration's progress", lambda: copying(engine, op["id"]), timeout=120,
             every=0.5)
    print(f"\nengine restarted: pid {restart_engine(lab, engine)}")
    ended = engine.sdk().wait_quiet(op["id"], timeout=300)
    print(f"after the restart: {ended.status.value}: {ended.message}")
    assert ended.status.value in ("success", "failure"), ended
    # Exactly one copy, and the engine's row names the host that runs it.
    running = [n for n in (1, 2) if VM in virsh(lab, n, "list", "--name").split()]
    assert len(running) == 1, running
    where = host(lab, running[0])
    assert engine.vm(VM)["host"] == where and engine.vm(VM)["state"] == "running"
    other = 2 if running[0] == 1 else 1
    assert VM not in virsh(lab, other, "list", "--all", "--name").split()
    assert uptime(engine) > before  # the same guest
    if ended.status.value == "success":
        assert where == h1, ended


def test_a_stopped_vm_is_refused(lab: LabCli, engine: LabEngine) -> None:
    where = engine.vm(VM)["host"]
    other = host(lab, 2) if where == host(lab, 1) else host(lab, 1)
    lab.run("vm", "stop", VM, "--force", timeout=180)
    refused = lab.run("vm", "migrate", VM, "--to", other, check=False)
    assert refused.returncode == 2 and f"{VM} is stopped" in refused.stderr, refused.stderr
    assert engine.vm(VM)["host"] == where


def test_a_stopped_vm_moves_offline_with_its_disk(lab: LabCli, engine: LabEngine) -> None:
    """`vm migrate --offline`: a stopped VM whose root disk is on host 1's own storage (and
    that has a cloud-init seed) moves to host 2, starts there with what it wrote to its
    disk before, and nothing of it is left on host 1."""
    h1, h2 = host(lab, 1), host(lab, 2)
    lab.run("vm", "create", COLD, "--image", "tiny", "--memory", "128M", "--host", h1,
            "--hostname", "coldhost", "--start", timeout=300)
    try:
        engine.wait_booted(COLD)
        marker = engine.console_run(COLD, "echo kept >/root/mark && sync && echo ok",
                                    timeout=60)
        assert marker.output == "ok", marker
        lab.run("vm", "stop", COLD, "--force", timeout=180)  # synced: nothing is lost
        refused = lab.run("vm", "migrate", COLD, "--to", h2, check=False)
        assert refused.returncode == 2 and "--offline" in refused.stderr, refused.stderr

        op = lab.json("vm", "migrate", COLD, "--to", h2, "--offline")
        assert op["status"] == "success" and op["type"] == "vm.migrate", op
        print(f"\noffline migration: {op['message']}")
        assert op["message"].startswith(f"moved offline from {h1} to {h2}"), op
        shown = engine.vm(COLD)
        assert shown["host"] == h2 and shown["state"] == "stopped"
        assert virsh(lab, 2, "domstate", COLD).strip() == "shut off"
        assert COLD not in virsh(lab, 1, "list", "--all", "--name").split()
        assert _disk(lab, 2, COLD).exists() and not _disk(lab, 1, COLD).exists()
        assert not list(_disk(lab, 1, COLD).parent.glob(f"{COLD}*"))  # seed, parts: none

        lab.run("vm", "start", COLD, timeout=180)
        engine.wait_booted(COLD)
        assert virsh(lab, 2, "domstate", COLD).strip() == "running"
        read = engine.console_run(COLD, "cat /root/mark; hostname", timeout=60)
        assert read.output.split() == ["kept", "coldhost"], read
    finally:
        lab.run("vm", "delete", COLD, "--force", check=False, timeout=300)

# -- how it travels: TLS, the migration network, convergence -------------------------------
# The lab hosts' libvirtds listen with TLS only (no plain libvirt TCP port); by default
# QEMU's stream is TLS (the frames on the target's interface start with a TLS handshake,
# QEMU's stream magic never crosses in the clear) and the operation says so;
# `corral cluster set migration.tls off` sends it plain; `migration.network` names the
# network the stream goes to (a target without an address there is refused before anything
# moves); `migration.converge_s` cancels a migration that does not converge in time.

@pytest.fixture(scope="module")
def guest(lab: LabCli, engine: LabEngine) -> str:
    """A guest of the TLS tests (deleted by test_lab_down_leaves_nothing)."""
    lab.run("vm", "create", SEALED, "--image", "tiny", "--memory", "128M", "--pool",
            "shared", "--host", host(lab, 1), "--start", timeout=300)
    engine.wait_booted(SEALED)
    return SEALED


def virsh_list(lab: LabCli, n: int) -> list[str]:
    uri = lab.lab_host(host(lab, n)).libvirt_uri()
    return subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True,
                          text=True, timeout=60, check=True).stdout.split()


def setting(lab: LabCli, key: str, value: str | None) -> None:
    if value is None:
        lab.run("cluster", "unset", key)
    else:
        lab.run("cluster", "set", key, value)


def test_libvirtd_listens_with_tls_only_on_the_lab_hosts_address(lab: LabCli) -> None:
    for n in (1, 2):
        lab_host = lab.lab_host(host(lab, n))
        listening = [line.split()[3] for line in
                     lab_host.run(["ss", "-Hltn"]).stdout.splitlines() if line.strip()]
        assert f"{lab_host.address}:16514" in listening, listening
        assert not [a for a in listening if a.endswith(":16509")], listening


def test_a_migration_is_encrypted_by_default(lab: LabCli, engine: LabEngine, guest: str,
                                             tmp_path: Path) -> None:
    h2 = host(lab, 2)
    with sniffing(lab.lab_host(h2), tmp_path / "sniff.json") as seen:
        op = lab.json("vm", "migrate", guest, "--to", h2)
    assert op["status"] == "success", op
    print(f"\nmigration: {op['message']}; stream: {seen[0]}")
    assert op["message"].endswith(", encrypted (TLS)"), op["message"]
    assert engine.vm(guest)["host"] == h2
    assert seen[0].flows, "no migration stream crossed the target's interface"
    assert all(first.startswith(TLS_HANDSHAKE) for first in seen[0].firsts()), seen[0]
    assert not seen[0].qevm  # nothing of QEMU's stream readable


def test_with_tls_off_the_stream_is_plain_and_the_operation_says_so(
        lab: LabCli, engine: LabEngine, guest: str, tmp_path: Path) -> None:
    h1 = host(lab, 1)
    setting(lab, "migration.tls", "off")
    try:
        with sniffing(lab.lab_host(h1), tmp_path / "sniff.json") as seen:
            op = lab.json("vm", "migrate", guest, "--to", h1)
    finally:
        setting(lab, "migration.tls", None)
    assert op["status"] == "success", op
    print(f"\nmigration: {op['message']}; stream: {seen[0]}")
    assert op["message"].endswith(", not encrypted (migration.tls is off)"), op["message"]
    assert engine.vm(guest)["host"] == h1
    assert any(first.startswith(QEVM) for first in seen[0].firsts()), seen[0]
    assert seen[0].qevm


def test_the_stream_goes_to_the_migration_network_and_a_host_outside_is_refused(
        lab: LabCli, engine: LabEngine, guest: str) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    assert engine.vm(guest)["host"] == h1
    setting(lab, "migration.network", "10.99.0.0/24")
    try:
        refused = lab.run("vm", "migrate", guest, "--to", h2, check=False)
        assert refused.returncode == 2, refused
        assert f"host {h2} has no address in the migration network 10.99.0.0/24" in \
            refused.stderr, refused.stderr
        assert engine.vm(guest)["host"] == h1 and guest not in virsh_list(lab, 2)
        # The lab's underlay: every lab host has its address there.
        setting(lab, "migration.network", "10.209.0.0/16")
        op = lab.json("vm", "migrate", guest, "--to", h2)
        assert op["status"] == "success", op
    finally:
        setting(lab, "migration.network", None)
    assert engine.vm(guest)["host"] == h2


def test_a_migration_that_does_not_converge_in_time_is_cancelled_with_the_reason(
        lab: LabCli, engine: LabEngine, guest: str) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    assert engine.vm(guest)["host"] == h2
    setting(lab, "migration.converge_s", "10")
    try:
        # 1 MiB/s: 128 MiB of memory cannot be sent in 10 s.
        op = lab.json("vm", "migrate", guest, "--to", h1, "--bandwidth", "1", "--no-wait")
        ended = engine.sdk().wait_quiet(op["id"], timeout=180)
    finally:
        setting(lab, "migration.converge_s", None)
    assert ended.status.value == "failure", ended
    print(f"\nerror: {ended.error}")
    assert ended.error and "did not converge in 10 s: " in ended.error["message"]
    assert "the VM keeps running here" in ended.error["message"]
    shown = engine.vm(guest)
    assert shown["host"] == h2 and shown["state"] == "running"
    assert guest not in virsh_list(lab, 1)  # nothing left on the target


def test_lab_down_leaves_nothing(lab: LabCli) -> None:
    for vm in (VM, PINGER):
        lab.run("vm", "delete", vm, "--force", timeout=300)
    lab.run("vm", "delete", SEALED, "--force", check=False, timeout=300)  # if TLS tests ran
    lab.run("lab", "down", timeout=120)
    assert_nothing_left(lab)

