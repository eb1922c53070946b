"""corosync in `corral lab` (docs/ha.md "Quorum (corosync)"): a 3-host lab runs corosync (votequorum
over knet) in every lab host, all hosts in its nodelist, and each host's QuorumReader
(corral.agent.quorum, run inside the host as its agent runs it) reports what corosync sees.

- All three quorate with the three names; `lab3` cut off: lab3 alone and not quorate, lab1
  and lab2 quorate together; healed: all three again.
- `lab add-host`: every host's corosync.conf gets the new node, the running ones reload it,
  and the four are one membership.
- Power-off of a host kills its corosync with the rest; power-on starts it again.
- `lab remove-host`: it goes from every other host's nodelist, the three stay quorate.
- `lab down` leaves no corosync behind.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import partial

import pytest
from labutil import LabCli, assert_nothing_left, lab_dirs, pid_prefix
from nodeutil import wait_for

from corral.agent_api.reports import Membership
from corral.lab import _procs

pytestmark = pytest.mark.integration

READ = ("from corral.agent.quorum import QuorumReader\n"
        "m = QuorumReader('corosync').read()\n"
        "print(m.model_dump_json() if m else 'null')\n")
CHANGE_S = 20  # a membership change takes about 2 s (token 1000 ms); loaded machine: more


@pytest.fixture(scope="module")
def lab() -> Iterator[LabCli]:
    with lab_dirs(pid_prefix("q")) as cli:
        cli.run("lab", "up", "--hosts", "3", "--storage", "none", "--prefix", cli.prefix,
                "--no-image", "--no-fence", timeout=400)
        yield cli


def name(lab: LabCli, n: int) -> str:
    return f"{lab.prefix}{n}"


def membership(lab: LabCli, n: int) -> Membership | None:
    """What host n's agent would report: its QuorumReader, run inside the host."""
    out = lab.lab_host(name(lab, n)).run([sys.executable, "-c", READ], timeout=60).stdout
    return None if out.strip() == "null" else Membership.model_validate_json(out)


def sees(lab: LabCli, n: int, quorate: bool, *members: int) -> bool:
    m = membership(lab, n)
    return m is not None and m.quorate == quorate \
        and m.members == sorted(name(lab, k) for k in members)


def corosync_pid(lab: LabCli, n: int) -> int | None:
    return lab.lab_host(name(lab, n)).daemon_pid("corosync")


def test_every_host_sees_the_quorate_membership_of_three(lab: LabCli) -> None:
    assert lab.state()["quorum"] is True
    status = lab.hosts()
    for n in (1, 2, 3):
        host = lab.lab_host(name(lab, n))
        pid = corosync_pid(lab, n)
        assert pid is not None and pid in host.processes()  # power-off kills it too
        assert status[name(lab, n)]["corosync_pid"] == pid  # `corral lab status`
        assert host.quorum_start_argv() == ["corosync", "-c", str(host.corosync_conf())]
        wait_for(f"host {n} quorate with 3 members", partial(sees, lab, n, True, 1, 2, 3),
                 timeout=CHANGE_S)


def test_a_cut_off_host_loses_quorum_and_the_others_keep_it(lab: LabCli) -> None:
    lab.run("lab", "fault", name(lab, 3), "cut-network")
    try:
        wait_for("host 3 alone, not quorate", partial(sees, lab, 3, False, 3), timeout=CHANGE_S)
        for n in (1, 2):
            wait_for(f"host {n} quorate with hosts 1 and 2",
                     partial(sees, lab, n, True, 1, 2), timeout=CHANGE_S)
    finally:
        lab.run("lab", "fault", name(lab, 3), "heal")
    for n in (1, 2, 3):
        wait_for(f"host {n} quorate with 3 members again",
                 partial(sees, lab, n, True, 1, 2, 3), timeout=CHANGE_S)


def test_an_added_host_joins_every_hosts_membership(lab: LabCli) -> None:
    lab.run("lab", "add-host", timeout=300)
    for n in (1, 2, 3, 4):
        conf = lab.lab_host(name(lab, n)).corosync_conf().read_text()
        assert f"name: {name(lab, 4)}\n" in conf
        wait_for(f"host {n} quorate with 4 members",
                 partial(sees, lab, n, True, 1, 2, 3, 4), timeout=CHANGE_S)


def test_power_off_kills_corosync_power_on_starts_it(lab: LabCli) -> None:
    old = corosync_pid(lab, 2)
    assert old is not None
    lab.run("lab", "fault", name(lab, 2), "power-off")
    assert not _procs.is_alive(old)
    assert membership(lab, 2) == Membership(quorate=False, members=[], ring_id="")
    wait_for("host 1 quorate without host 2", partial(sees, lab, 1, True, 1, 3, 4),
             timeout=CHANGE_S)
    lab.run("lab", "fault", name(lab, 2), "power-on", timeout=300)
    assert corosync_pid(lab, 2) not in (None, old)
    for n in (1, 2):
        wait_for(f"host {n} quorate with 4 members",
                 partial(sees, lab, n, True, 1, 2, 3, 4), timeout=CHANGE_S)


def test_a_removed_host_leaves_every_hosts_membership(lab: LabCli) -> None:
    gone = corosync_pid(lab, 4)
    lab.run("lab", "remove-host", name(lab, 4), timeout=300)
    assert gone is not None and not _procs.is_alive(gone)
    for n in (1, 2, 3):
        assert name(lab, 4) not in lab.lab_host(name(lab, n)).corosync_conf().read_text()
        wait_for(f"host {n} quorate with 3 members",
                 partial(sees, lab, n, True, 1, 2, 3), timeout=CHANGE_S)


def test_lab_down_leaves_no_corosync(lab: LabCli) -> None:
    pids = [pid for n in (1, 2, 3) if (pid := corosync_pid(lab, n)) is not None]
    assert len(pids) == 3
    lab.run("lab", "down", timeout=300)
    assert [pid for pid in pids if _procs.is_alive(pid)] == []
    assert_nothing_left(lab)  # no process mentions the lab's root (corosync -c ROOT/...)
