"""corosync.conf for a corral cluster: corosync 3 over knet, membership and quorum by
votequorum (pure: text in, text out; the lab writes it, `corral ha corosync-conf` prints it).

corral does not run a quorum protocol of its own: each host's agent reads corosync's view
(corral.agent.quorum) and reports it, and the engine decides who left the quorate membership.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from corral.errors import InvalidInput

# The engine's rule for a host name (engine/services/host_join.validate_host_name): the
# node names are corral host names, so the agents' reports name hosts the engine knows.
_HOST_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                           r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_CLUSTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
NODEID_MAX = 2**31 - 1  # corosync's nodeid: 32 bits, 0 reserved
NODES_MAX = 384  # knet's limit of nodes in one cluster

# Failure detection (corosync(8) totem): a node is declared lost `token` ms after its last
# token, then the membership re-forms within `consensus` (1.2 x token). corral detects a
# lost host in ha.detect_s (3 s) and leases last ha.lease_s (10 s): token 1000 ms moves the
# membership about 2.2 s after a cut, inside detection and well inside a lease. corosync's
# default (3000 ms + 650 ms per node beyond two) would take 4-5 s. token_coefficient 0 keeps
# it the same for any number of nodes.
TOKEN_MS = 1000
TOKEN_COEFFICIENT_MS = 0


@dataclass(frozen=True)
class Node:
    nodeid: int
    name: str  # the corral host name
    address: str  # where its peers reach it (knet link 0): an IP address or a DNS name


def stable_nodeid(name: str) -> int:
    """A node id from the host name alone (1 to 2^31-1): the same on every rendering, so
    adding or removing a host changes no other host's id (the engine keeps no number per
    host). Two names with one id are refused by :func:`render`."""
    return zlib.crc32(name.encode()) % NODEID_MAX + 1


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        # A name's last label is never all digits: 10.0.0.300 is a bad address, no name.
        if isinstance(value, str) and len(value) <= 253 and _HOST_NAME_RE.match(value) \
                and not value.rsplit(".", 1)[-1].isdigit():
            return value.lower()
        raise InvalidInput(f"address {value!r} is neither an IP address nor a DNS name",
                           field="address") from None


def _check(cluster_name: str, nodes: Sequence[Node], logfile: str) -> None:
    if not isinstance(cluster_name, str) or not _CLUSTER_NAME_RE.match(cluster_name):
        raise InvalidInput(f"cluster name {cluster_name!r} must be 1-32 letters, digits, "
                           "'-' or '_'", field="cluster_name")
    if not nodes:
        raise InvalidInput("a corosync cluster needs at least one node", field="nodes")
    if len(nodes) > NODES_MAX:
        raise InvalidInput(f"corosync takes at most {NODES_MAX} nodes", field="nodes")
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    seen_addrs: set[str] = set()
    for node in nodes:
        if isinstance(node.nodeid, bool) or not isinstance(node.nodeid, int) \
                or not 1 <= node.nodeid <= NODEID_MAX:
            raise InvalidInput(f"nodeid {node.nodeid!r} must be an integer from 1 to "
                               f"{NODEID_MAX}", field="nodeid")
        if not isinstance(node.name, str) or len(node.name) > 63 \
                or not _HOST_NAME_RE.match(node.name):
            raise InvalidInput(f"node name {node.name!r} must be a corral host name (a DNS "
                               "name of at most 63 characters)", field="name")
        addr = _address(node.address)
        for value, seen, what in ((node.nodeid, seen_ids, "nodeid"),
                                  (node.name, seen_names, "name"),
                                  (addr, seen_addrs, "address")):
            if value in seen:
                raise InvalidInput(f"two nodes have {what} {value}", field=what)
            seen.add(value)  # type: ignore[arg-type]
    if not isinstance(logfile, str) or not logfile.startswith("/") or any(
            c in logfile for c in "\n{}#"):
        raise InvalidInput(f"logfile {logfile!r} must be an absolute path", field="logfile")


def render(cluster_name: str, nodes: Sequence[Node], logfile: str,
           crypto: bool = True, state_dir: str | None = None) -> str:
    """The corosync.conf of ``nodes`` (in nodeid order, the same text on every host).

    ``crypto``: encrypt and authenticate knet (needs the same /etc/corosync/authkey on every
    host, `corosync-keygen`); the lab turns it off (its hosts share one machine).
    ``state_dir``: corosync's state directory where it is not /var/lib/corosync (a lab host).
    """
    _check(cluster_name, nodes, logfile)
    if state_dir is not None and (not state_dir.startswith("/") or "\n" in state_dir):
        raise InvalidInput(f"state_dir {state_dir!r} must be an absolute path",
                           field="state_dir")
    lines = [
        "# Written by corral: every host of the cluster has the same file.",
        "totem {",
        "    version: 2",
        f"    cluster_name: {cluster_name}",
        "    transport: knet",
        f"    token: {TOKEN_MS}",
        f"    token_coefficient: {TOKEN_COEFFICIENT_MS}",
        f"    crypto_cipher: {'aes256' if crypto else 'none'}",
        f"    crypto_hash: {'sha256' if crypto else 'none'}",
        "}",
        "",
        "nodelist {",
    ]
    for node in sorted(nodes, key=lambda n: n.nodeid):
        lines += [
            "    node {",
            f"        nodeid: {node.nodeid}",
            f"        name: {node.name}",
            f"        ring0_addr: {_address(node.address)}",
            "    }",
        ]
    lines += ["}", "", "quorum {", "    provider: corosync_votequorum"]
    if len(nodes) == 2:
        # Two nodes: either half of a partition stays quorate (each has 1 vote of 2), so
        # quorum alone cannot tell which one to trust; corral then restarts a lost host's
        # VMs only after power fencing confirmed it off (or its lease lapsed), never on
        # quorum alone. A third host or corosync-qnetd is the real tie-breaker.
        lines.append("    two_node: 1")
    lines += ["}", "", "logging {", "    to_logfile: yes", f"    logfile: {logfile}",
              "    to_syslog: no", "    to_stderr: no", "    timestamp: on", "}"]
    if state_dir is not None:
        lines += ["", "system {", f"    state_dir: {state_dir}", "}"]
    return "\n".join(lines) + "\n"
