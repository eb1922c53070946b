"""corral.ha.corosync_conf: the corosync.conf corral writes (lab) and prints for admins."""

from __future__ import annotations

import pytest

from corral.errors import InvalidInput
from corral.ha.corosync_conf import Node, render, stable_nodeid

LOG = "/var/log/corosync/corosync.log"
TOTEM = """\
# Written by corral: every host of the cluster has the same file.
totem {
    version: 2
    cluster_name: corral
    transport: knet
    token: 1000
    token_coefficient: 0
    crypto_cipher: aes256
    crypto_hash: sha256
}
"""
LOGGING = """\
logging {
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    to_syslog: no
    to_stderr: no
    timestamp: on
}
"""


def _node(n: int) -> Node:
    return Node(n, f"host{n}", f"10.0.0.{n}")


def _nodelist(*ns: int) -> str:
    body = "".join(f"    node {{\n        nodeid: {n}\n        name: host{n}\n"
                   f"        ring0_addr: 10.0.0.{n}\n    }}\n" for n in ns)
    return f"nodelist {{\n{body}}}\n"


def test_one_node() -> None:
    assert render("corral", [_node(1)], LOG) == (
        TOTEM + "\n" + _nodelist(1) + "\nquorum {\n    provider: corosync_votequorum\n}\n\n"
        + LOGGING)


def test_two_nodes_get_two_node() -> None:
    assert render("corral", [_node(2), _node(1)], LOG) == (
        TOTEM + "\n" + _nodelist(1, 2) + "\nquorum {\n    provider: corosync_votequorum\n"
        "    two_node: 1\n}\n\n" + LOGGING)


def test_three_nodes_majority_without_two_node() -> None:
    assert render("corral", [_node(3), _node(1), _node(2)], LOG) == (
        TOTEM + "\n" + _nodelist(1, 2, 3) + "\nquorum {\n    provider: corosync_votequorum\n"
        "}\n\n" + LOGGING)


def test_lab_variant_no_crypto_own_state_dir() -> None:
    text = render("corral-lab", [_node(1)], "/lab/h1/log/corosync.log", crypto=False,
                  state_dir="/lab/h1/lib/corosync")
    assert "    crypto_cipher: none\n    crypto_hash: none\n" in text
    assert "    cluster_name: corral-lab\n" in text
    assert "    logfile: /lab/h1/log/corosync.log\n" in text
    assert text.endswith("system {\n    state_dir: /lab/h1/lib/corosync\n}\n")


def test_ipv6_address_written_canonical() -> None:
    assert "ring0_addr: fd00::1\n" in render("c", [Node(1, "a", "fd00:0::1")], LOG)


@pytest.mark.parametrize(("cluster", "nodes", "logfile", "field"), [
    ("corral", [], LOG, "nodes"),
    ("bad name", [_node(1)], LOG, "cluster_name"),
    ("x" * 33, [_node(1)], LOG, "cluster_name"),
    ("corral", [Node(0, "a", "10.0.0.1")], LOG, "nodeid"),
    ("corral", [Node(True, "a", "10.0.0.1")], LOG, "nodeid"),
    ("corral", [Node(1, "-a", "10.0.0.1")], LOG, "name"),
    ("corral", [Node(1, "a b", "10.0.0.1")], LOG, "name"),
    ("corral", [Node(1, "a}\nquorum {", "10.0.0.1")], LOG, "name"),
    ("corral", [Node(1, "a" * 64, "10.0.0.1")], LOG, "name"),
    ("corral", [Node(1, "a", "10.0.0.300")], LOG, "address"),
    ("corral", [Node(1, "a", "host_1.example")], LOG, "address"),
    ("corral", [_node(1), Node(1, "b", "10.0.0.9")], LOG, "nodeid"),
    ("corral", [_node(1), Node(2, "host1", "10.0.0.9")], LOG, "name"),
    ("corral", [_node(1), Node(2, "b", "10.0.0.1")], LOG, "address"),
    ("corral", [_node(1)], "relative.log", "logfile"),
    ("corral", [_node(1)], "/x\n}", "logfile"),
])
def test_bad_input_is_refused_naming_the_field(cluster: str, nodes: list[Node], logfile: str,
                                               field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        render(cluster, nodes, logfile)
    assert exc.value.field == field


def test_a_dns_name_is_an_address_too() -> None:
    assert "ring0_addr: node1.example.org\n" in render("c", [Node(1, "a", "Node1.example.org")],
                                                       LOG)


def test_stable_nodeids_depend_on_the_name_alone() -> None:
    ids = [stable_nodeid(f"host{n}") for n in range(200)]
    assert len(set(ids)) == 200 and all(1 <= i < 2**31 for i in ids)
    assert stable_nodeid("host7") == ids[7]


def test_names_follow_the_engines_host_name_rule() -> None:
    from corral.engine.services.host_join import validate_host_name

    for name in ("lab1", "node-2.example.org", "A1"):
        validate_host_name(name)
        assert f"name: {name}\n" in render("c", [Node(1, name, "10.0.0.1")], LOG)
