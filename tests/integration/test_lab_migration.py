"""Live migration for real: a 2-host `corral lab` (shared dir pool `shared` on both, image
`tiny` built on the first), a tiny guest whose root disk is in the shared pool started on
host 1 and counting on its serial console, moved with `corral vm migrate --to host2` while
it runs. Then host 2's libvirtd runs it, host 1 has no domain of it, `vm show` names host 2,
the guest kept running (its uptime went on, its counter continues on host 2's console) and
the operation reports the downtime libvirt measured.

One lab for the module (its own root, names and HOME; brought down at the end even when a
test fails), driven through the CLI as a user would.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import LabCli, assert_nothing_left, lab_session
from nodeutil import wait_for

pytestmark = pytest.mark.integration

VM = "mover"
LOCAL = "local"
TICK = re.compile(r"MIGTICK (\d+)")


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


def test_a_running_guest_moves_to_host2_and_keeps_running(
        lab: LabCli, engine: LabEngine) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    lab.run("vm", "create", VM, "--image", "tiny", "--memory", "128M", "--pool", "shared",
            "--host", h1, "--start", timeout=300)
    assert engine.vm(VM)["host"] == h1 and engine.vm(VM)["pool"] == "shared"
    engine.wait_booted(VM)
    # A counter on the serial console, once a second, detached from the typed command.
    started = engine.console_run(
        VM, "sh -c 'i=0; while true; do i=$((i+1)); echo MIGTICK $i >/dev/ttyS0; sleep 1;"
        " done' </dev/null >/dev/null 2>&1 & echo started", timeout=60)
    assert started.output == "started", started
    wait_for("the counter to tick", lambda: len(ticks(engine)) >= 3, timeout=60, every=1)
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
             lambda: any(n > last_on_h1 for n in ticks(engine)), timeout=60, every=1)
    assert min(ticks(engine)) > 1  # no restart from 1

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


def test_a_stopped_vm_is_refused(lab: LabCli, engine: LabEngine) -> None:
    lab.run("vm", "stop", VM, "--force", timeout=180)
    refused = lab.run("vm", "migrate", VM, "--to", host(lab, 2), check=False)
    assert refused.returncode == 2 and f"{VM} is stopped" in refused.stderr, refused.stderr
    assert engine.vm(VM)["host"] == host(lab, 1)


def test_lab_down_leaves_nothing(lab: LabCli) -> None:
    lab.run("vm", "delete", VM, "--force", timeout=300)
    lab.run("lab", "down", timeout=120)
    assert_nothing_left(lab)

