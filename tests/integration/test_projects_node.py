"""Projects on a real node, through the CLI (engine, agent, libvirtd, QEMU under TCG): two
projects each have a VM ``web``, which libvirt knows as ``pa.web`` and ``pb.web``; the user
of one project cannot see, start, console into or delete the other's; a viewer's token
cannot create; a quota refuses the VM past it; the audit log holds each refusal and
`audit verify` passes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from nodeutil import CORRAL, Node, wait_for
from storageutil import traversable

from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


def _as(node: Node, token: str, *args: str, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    """``corral ARGS`` with another user's API token."""
    proc = subprocess.run([*CORRAL, *args], env={**node.env, "CORRAL_TOKEN": token},
                          capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"corral {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def _token(node: Node, user: str, role: str, project: str) -> str:
    node.cli("user", "create", user, "--role", "none", "--no-password")
    node.cli("role", "assign", user, role, "--project", project)
    made: Any = node.cli_json("token", "create", "--name", "it", "--user", user)
    return str(made["token"])


@pytest.fixture(scope="module")
def tenants(node: Node) -> Iterator[dict[str, str]]:
    """Projects pa and pb; alice (user of pa), bob (user of pb), vic (viewer of pa); the
    tiny image shared. Everything removed at the end, even after a failure."""
    node.cli("project", "create", "pa")
    node.cli("project", "create", "pb")
    node.cli("image", "share", "tiny")
    try:
        yield {"alice": _token(node, "alice", "user", "pa"),
               "bob": _token(node, "bob", "user", "pb"),
               "vic": _token(node, "vic", "viewer", "pa")}
    finally:
        for project in ("pa", "pb"):
            names: Any = node.cli_json("--project", project, "vm", "list")
            for vm in names:
                node.cli("--project", project, "vm", "delete", vm["name"], "--force",
                         check=False)
        for user in ("alice", "bob", "vic"):
            node.cli("user", "delete", user, check=False)
        for project in ("pa", "pb"):
            node.cli("project", "delete", project, check=False)
        node.cli("image", "share", "tiny", "--off", check=False)


def test_two_projects_each_have_a_vm_web_and_keep_to_their_own(
        node: Node, tenants: dict[str, str]) -> None:
    alice, bob, vic = tenants["alice"], tenants["bob"], tenants["vic"]
    traversable(node)
    _as(node, alice, "--project", "pa", "vm", "create", "web", "--image", "tiny",
        "--memory", "128M", "--start")
    _as(node, bob, "--project", "pb", "vm", "create", "web", "--image", "tiny",
        "--memory", "128M")
    domains = node.virsh("list", "--all", "--name").split()
    assert "pa.web" in domains and "pb.web" in domains  # one domain each, by full name
    wait_for("pa's web to boot",
             lambda: BOOT_MARKER in _as(node, alice, "--project", "pa", "vm", "console",
                                        "web", "--log").stdout, timeout=180)
    mine = json.loads(_as(node, alice, "--project", "pa", "vm", "list", "-o", "json").stdout)
    assert [(v["name"], v["project"], v["state"]) for v in mine] == [("web", "pa", "running")]

    # bob's project does not exist for alice: show, start, console and delete say so
    for args in (("vm", "show", "web"), ("vm", "start", "web"),
                 ("vm", "console", "web", "--log"), ("vm", "delete", "web", "--force")):
        refused = _as(node, alice, "--project", "pb", *args, check=False)
        assert refused.returncode != 0, args
        assert "project pb not found" in refused.stderr, (args, refused.stderr)
    assert node.virsh("domstate", "pb.web") == "shut off"  # untouched

    # a snapshot of pa's web (its disk is pa.web's on the host)
    _as(node, alice, "--project", "pa", "vm", "snapshot", "create", "web", "s1")
    snaps = json.loads(_as(node, alice, "--project", "pa", "vm", "snapshot", "list", "web",
                           "-o", "json").stdout)
    assert [x["name"] for x in snaps] == ["s1"]

    # a viewer of pa reads it and cannot create there
    seen = json.loads(_as(node, vic, "--project", "pa", "vm", "list", "-o", "json").stdout)
    assert [v["name"] for v in seen] == ["web"]
    refused = _as(node, vic, "--project", "pa", "vm", "create", "more", "--image", "tiny",
                  "--memory", "128M", check=False)
    assert refused.returncode != 0 and "vm.create" in refused.stderr

    # a quota of one VM in pa: the second is refused, naming the quota
    node.cli("project", "quota", "set", "pa", "--vms", "1")
    refused = _as(node, alice, "--project", "pa", "vm", "create", "two", "--image", "tiny",
                  "--memory", "128M", check=False)
    assert refused.returncode != 0 and "quota vms is 1" in refused.stderr, refused.stderr

    # the audit log: alice's refused delete of bob's VM, and the chain holds
    rows: Any = node.cli_json("audit", "list", "--user", "alice")
    assert any(r["action"] == "vm.delete" and r["status"] == 404 for r in rows), rows
    assert "OK" in node.cli("audit", "verify").stdout
