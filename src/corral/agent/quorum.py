"""This host's view of the cluster membership, as its corosync (votequorum) has it.

One call of ``corosync-quorumtool -s`` (about 15 ms) gives all of it: whether the partition
this host is in is quorate, the ring id, and the members by node name (the nodelist names
them by corral host name, corral.ha.corosync_conf). The agent reads it with each report.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from corral.agent_api.reports import Membership

log = logging.getLogger(__name__)

MODES = ("auto", "corosync", "none")
PIDFILE = Path("/run/corosync.pid")  # fixed in corosync (a lab host binds its own over it)
TOOL_TIMEOUT_S = 2.0
# corosync-quorumtool -s: exit 0 quorate, 2 not quorate, 1 no corosync to ask (or error)
_EXIT_QUORATE, _EXIT_NOT_QUORATE = 0, 2
_RING_RE = re.compile(r"^Ring ID:\s+(\S+)\s*$", re.M)
_QUORATE_RE = re.compile(r"^Quorate:\s+(Yes|No)\s*$", re.M)
# A member line under "Membership information": nodeid, votes, [qdevice flags,] name.
_MEMBER_RE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(?:[A-Z,]+\s+)?(\S+)(?:\s+\(local\))?\s*$")
_EXPECTED_RE = re.compile(r"^(?:Expected votes|Highest expected):\s+(\d+)\s*$", re.M)


def parse_status(text: str, returncode: int) -> Membership:
    """Membership from the output of ``corosync-quorumtool -s`` and its exit status.

    Quorate here means what the lease needs: corosync says quorate AND the members hold a
    strict majority of the expected votes (the higher of "Expected votes" and "Highest
    expected"). corosync's flag alone is also set for half or less by ``two_node``,
    ``last_man_standing`` or ``auto_tie_breaker``: both halves of a two-host cluster stay
    quorate, and a lease renewed on such a view would outlive the engine's count.

    Anything unexpected (an exit status other than 0 or 2, a missing line, an exit status
    that contradicts the text) reads as not quorate with no members: the host then counts as
    out of the membership, the safe side (it never keeps its lease on a misread)."""
    lost = Membership(quorate=False, members=[], ring_id="")
    quorate_m = _QUORATE_RE.search(text)
    ring_m = _RING_RE.search(text)
    if returncode not in (_EXIT_QUORATE, _EXIT_NOT_QUORATE) or quorate_m is None \
            or ring_m is None:
        return lost
    quorate = quorate_m.group(1) == "Yes"
    if quorate != (returncode == _EXIT_QUORATE):
        return lost
    _, sep, table = text.partition("Membership information")
    members, votes = [], 0
    for line in table.splitlines()[1:] if sep else []:
        m = _MEMBER_RE.match(line)
        if m is not None:
            members.append(m.group(3))
            votes += int(m.group(2))
    expected = max((int(v) for v in _EXPECTED_RE.findall(text)), default=0)
    if not members or expected == 0:
        return lost
    majority = 2 * votes > expected
    return Membership(quorate=quorate and majority, members=sorted(members),
                      ring_id=ring_m.group(1)[:100])


def corosync_runs(pidfile: Path) -> bool:
    """Whether ``pidfile`` names a live corosync: a file read, no process spawned."""
    try:
        pid = int(pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return comm == "corosync" and stat.rpartition(")")[2].split()[:1] != ["Z"]


class QuorumReader:
    """``read()`` this host's membership: None where the host has no quorum provider.

    mode ``none``: always None (no quorum provider; the engine relies on its own view).
    mode ``auto`` (the default): None until a live corosync is found through its pid file
    (a file read at each call, cheap: no process is spawned on a host without corosync; the
    lab starts corosync after the agents joined, and it is seen at the next report). From
    then on corosync is this host's quorum provider until the agent restarts.
    mode ``corosync``: corosync is the provider from the start.

    Once corosync is the provider, a read that cannot get a sound answer (corosync gone or
    left the membership with `corosync-cfgtool -H`, the tool failing, timing out after 2 s
    or printing what it should not) gives ``Membership(quorate=False, members=[])``, never
    None: a host whose corosync died is out of the membership for its peers too, and must
    say so, so that its lease may lapse rather than look like a host without a provider.
    """

    def __init__(self, mode: str = "auto", pidfile: Path = PIDFILE,
                 tool: str = "corosync-quorumtool") -> None:
        if mode not in MODES:
            raise ValueError(f"quorum mode {mode!r}: one of {', '.join(MODES)}")
        self.mode = mode
        self.pidfile = pidfile
        self.tool = tool
        self._provider = mode == "corosync"

    def read(self) -> Membership | None:
        if self.mode == "none":
            return None
        runs = corosync_runs(self.pidfile)
        if not self._provider:
            if not runs:
                return None
            log.info("quorum: corosync runs (%s): reporting its membership", self.pidfile)
            self._provider = True
        if not runs:
            return Membership(quorate=False, members=[], ring_id="")
        try:
            proc = subprocess.run([self.tool, "-s"], capture_output=True, text=True,
                                  timeout=TOOL_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("quorum: %s -s failed: %s", self.tool, exc)
            return Membership(quorate=False, members=[], ring_id="")
        return parse_status(proc.stdout, proc.returncode)
