"""`corral project` and `corral role` against a real engine over HTTPS (uvicorn on
loopback), HOME the test's own: a project is made, its quotas set from sizes such as 32G and
shown against use; `project switch` keeps the project next to the token, and every later
command acts in it (`--project` beats it for one command); roles are made and assigned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_node import Node, cli, ok, serving_node

from corral.client import Client, remotes
from corral.engine.context import EngineContext
from corral.engine.db.models import Image, Vm

GIB = 1 << 30


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    with serving_node(tmp_path, monkeypatch) as node:
        yield node


def add_vm(ctx: EngineContext, project: str, name: str) -> None:
    """A VM row of ``project`` as a finished create leaves it (no agent needed)."""
    full = name if project == "default" else f"{project}.{name}"
    with ctx.db.session() as s:
        s.add(Vm(name=full, project=project, cpus=2, memory_mib=1024, disk_bytes=GIB,
                 image_id=s.query(Image).filter_by(name="tiny").one().id, state="stopped"))


def vm_names(*args: str) -> list[str]:
    return [v["name"] for v in json.loads(ok(*args, "vm", "list", "-o", "json").stdout)]


def test_project_create_quota_show_and_delete(node: Node) -> None:
    assert "project web created" in ok("project", "create", "web", "-d", "the shop").output
    res = ok("project", "quota", "set", "web", "--vcpus", "16", "--memory", "32G", "--vms", "4",
             "--snapshots", "10")
    assert "vcpus" in res.output
    add_vm(node.ctx, "web", "a")
    shown = json.loads(ok("project", "show", "web", "-o", "json").stdout)
    assert shown["quotas"]["memory"] == 32 * GIB and shown["quotas"]["vcpus"] == 16
    assert shown["quotas"]["snapshots"] == 10
    assert shown["usage"]["vcpus"] == 2 and shown["usage"]["vms"] == 1
    table = " ".join(ok("project", "show", "web").output.split())
    assert "memory 1.0 GiB 32.0 GiB 31.0 GiB" in table  # used, limit, free
    assert "vms 1 4 3" in table and "holds: 1 vms" in table
    ok("project", "quota", "set", "web", "--vms", "none", "--disk", "0")
    shown = json.loads(ok("project", "show", "web", "-o", "json").stdout)
    assert shown["quotas"]["vms"] is None and shown["quotas"]["disk"] == 0
    res = cli("project", "quota", "set", "web", "--vcpus", "lots")
    assert res.exit_code == 2 and "a number >= 0, or none" in " ".join(res.output.split())
    res = cli("project", "delete", "web")
    assert res.exit_code == 2 and "still holds 1 vms" in " ".join(res.output.split())
    listed = json.loads(ok("project", "list", "-o", "json").stdout)
    assert [p["name"] for p in listed] == ["default", "web"]


def test_switch_keeps_the_project_and_every_command_acts_in_it(node: Node) -> None:
    ok("project", "create", "web")
    add_vm(node.ctx, "default", "old")
    add_vm(node.ctx, "web", "shop")
    assert vm_names() == ["old"]
    res = ok("project", "switch", "web")
    assert "now in project web" in res.output
    assert json.loads(node.config.read_text())["project"] == "web"  # next to the token
    assert vm_names() == ["shop"]
    assert vm_names("--project", "default") == ["old"]  # beats the switch for one command
    table = ok("project", "list").output
    assert any(line.split()[:2] == ["*", "web"] for line in table.splitlines())
    res = cli("project", "switch", "nope")
    assert res.exit_code == 2 and "project nope not found" in res.output
    assert json.loads(node.config.read_text())["project"] == "web"  # unchanged
    ok("project", "switch", "default")
    assert "project" not in json.loads(node.config.read_text())
    assert vm_names() == ["old"]


def test_switch_on_a_remote_keeps_it_in_the_remote_entry(node: Node) -> None:
    ok("project", "create", "web")
    add_vm(node.ctx, "web", "shop")
    remotes.add_remote("far", node.url, node.token, node.ca_pem)  # and switch to it
    ok("project", "switch", "web")
    assert remotes.get("far").project == "web"
    assert "project" not in json.loads(node.config.read_text())
    assert vm_names() == ["shop"]
    assert vm_names("--remote", "local") == []  # the local node's config names none


def test_roles_are_made_assigned_and_listed(node: Node) -> None:
    ok("project", "create", "web")
    ok("user", "create", "alice", "--role", "none", "--no-password")
    made = json.loads(ok("role", "create", "vmrunner", "--permission", "vm.*",
                         "--permission", "snapshot.read", "-o", "json").stdout)
    assert "vm.create" in made["permissions"] and "snapshot.read" in made["permissions"]
    res = cli("role", "create", "bad", "--permission", "vm.fly")
    assert res.exit_code == 2 and "vm.fly" in res.output
    assert "vm.create" in ok("role", "permissions").output.split()
    ok("role", "assign", "alice", "vmrunner", "--project", "web")
    ok("role", "assign", "@ops", "operator", "--project", "web")
    ok("role", "assign", "alice", "viewer")  # every project
    rows = json.loads(ok("role", "assignments", "--project", "web", "-o", "json").stdout)
    assert {(r["subject"], r["role"]) for r in rows} == {("alice", "vmrunner"),
                                                        ("@ops", "operator")}
    ok("project", "switch", "web")  # filters nothing but what --project names
    rows = json.loads(ok("role", "assignments", "--user", "alice", "-o", "json").stdout)
    assert {(r["role"], r["project"]) for r in rows} == {("vmrunner", "web"), ("viewer", "*")}
    res = cli("role", "delete", "vmrunner")
    assert res.exit_code == 2 and "in use" in res.output
    ok("role", "unassign", "alice", "vmrunner", "--project", "web")
    ok("role", "delete", "vmrunner")
    names = [r["name"] for r in json.loads(ok("role", "list", "-o", "json").stdout)]
    assert names == ["none", "viewer", "user", "operator", "admin"]


def test_the_sdk_sends_its_project_unless_the_call_names_one() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.query, "ascii"))
        return httpx.Response(200, json=[])

    with Client("http://engine", "t", project="web") as c:
        c._http.close()
        c._http = httpx.Client(base_url="http://engine", transport=httpx.MockTransport(answer))
        c.list_vms()
        c.list_operations(limit=5)
        c.list_role_assignments()  # no filter: the default project is no filter either
        c.list_role_assignments(project="db")
        c.unassign_role("alice", "user")
    assert seen == ["project=web", "limit=5&project=web", "", "project=db",
                    "subject=alice&role=user&project=%2A"]
