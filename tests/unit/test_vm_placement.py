"""Placement on the host: the agent's CPU, NUMA and huge page facts (read from a made-up
sysfs), vCPU pinning (``auto`` over made-up topologies, lists checked against the host),
guest NUMA cells and their host nodes, and huge pages refused with a 409 naming what is
needed and free, before anything is defined.

The engine runs for real (SQLite, routes, services) over a stand-in agent that answers the
host's facts (``GET /v1/host``) and takes the rest as done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient

from corral.agent import host_topology
from corral.agent_api.domains import HostFacts
from corral.api import Hardware
from corral.cpulist import format_cpu_list, parse_cpu_list
from corral.domainxml import Domain
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, Vm
from corral.engine.services import hosts, vm_design, vm_placement
from corral.errors import Conflict, InsufficientResources, InvalidInput


def _node(node_id: int, cpus: str, free_2m: int = 0, total_2m: int = 0,
          memory_mib: int = 4096) -> dict[str, Any]:
    return {"id": node_id, "cpus": parse_cpu_list(cpus), "memory_mib": memory_mib,
            "hugepages": [{"size_kib": 2048, "total": total_2m, "free": free_2m},
                          {"size_kib": 1048576, "total": 0, "free": 0}]}


def _facts(*nodes: dict[str, Any], mounts: list[int] | None = None) -> dict[str, Any]:
    cpus = sorted(c for n in nodes for c in n["cpus"])
    return {"cpus": len(cpus), "memory_mib": sum(n["memory_mib"] for n in nodes),
            "cpu_list": cpus, "numa_nodes": list(nodes),
            "hugetlbfs": [2048, 1048576] if mounts is None else mounts}


TWO_NODES = _facts(_node(0, "0-3", free_2m=100, total_2m=512),
                   _node(1, "4-7", free_2m=512, total_2m=512))


# -- the CPU list --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "cpus", "short"), [
    ("0-3,8-11", [0, 1, 2, 3, 8, 9, 10, 11], "0-3,8-11"),
    ("3,1,2, 0", [0, 1, 2, 3], "0-3"),
    ("0,1,5", [0, 1, 5], "0,1,5"),
    ("7", [7], "7"),
    ("", [], ""),
])
def test_cpu_lists(text: str, cpus: list[int], short: str) -> None:
    assert parse_cpu_list(text) == cpus
    assert format_cpu_list(cpus) == short


@pytest.mark.parametrize("bad", ["a", "1-", "3-1", "0-9000", "1,,2", "-1"])
def test_bad_cpu_lists(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(bad)


# -- the agent's facts -------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_facts_from_a_two_node_sysfs(tmp_path: Path) -> None:
    """CPUs offline are left out of their node; huge pages per node and size; the sizes
    that have a hugetlbfs mount (the default size when no pagesize= is given)."""
    _write(tmp_path / "sys/devices/system/cpu/online", "0-5,7\n")
    for node, cpus, mem_kib, free in ((0, "0-3", 8 << 20, 10), (1, "4-7", 4 << 20, 0)):
        base = tmp_path / f"sys/devices/system/node/node{node}"
        _write(base / "cpulist", cpus + "\n")
        _write(base / "meminfo", f"Node {node} MemTotal:       {mem_kib} kB\n"
                                 f"Node {node} MemFree:        1 kB\n")
        _write(base / "hugepages/hugepages-2048kB/nr_hugepages", "16\n")
        _write(base / "hugepages/hugepages-2048kB/free_hugepages", f"{free}\n")
        _write(base / "hugepages/hugepages-1048576kB/nr_hugepages", "0\n")
        _write(base / "hugepages/hugepages-1048576kB/free_hugepages", "0\n")
    _write(tmp_path / "sys/devices/system/node/online", "0-1\n")  # not a node
    _write(tmp_path / "proc/meminfo", "MemTotal: 12582912 kB\nHugepagesize:       2048 kB\n")
    _write(tmp_path / "proc/mounts", "hugetlbfs /dev/hugepages hugetlbfs rw,relatime 0 0\n"
                                     "none /mnt/1g hugetlbfs rw,pagesize=1G 0 0\n"
                                     "proc /proc proc rw 0 0\n")
    assert host_topology.online_cpus(tmp_path) == [0, 1, 2, 3, 4, 5, 7]
    nodes = host_topology.numa_nodes(tmp_path)
    assert [(n.id, n.cpus, n.memory_mib) for n in nodes] == \
        [(0, [0, 1, 2, 3], 8192), (1, [4, 5, 7], 4096)]
    assert [(p.size_kib, p.total, p.free) for p in nodes[0].hugepages] == \
        [(2048, 16, 10), (1048576, 0, 0)]
    assert host_topology.hugetlbfs_sizes(tmp_path) == [2048, 1048576]


def test_facts_of_a_kernel_without_numa(tmp_path: Path) -> None:
    _write(tmp_path / "sys/devices/system/cpu/online", "0-1\n")
    _write(tmp_path / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "8\n")
    _write(tmp_path / "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "8\n")
    _write(tmp_path / "proc/meminfo", "MemTotal: 2097152 kB\n")
    nodes = host_topology.numa_nodes(tmp_path)
    assert [(n.id, n.cpus, n.memory_mib) for n in nodes] == [(0, [0, 1], 2048)]
    assert [(p.size_kib, p.total, p.free) for p in nodes[0].hugepages] == [(2048, 8, 8)]
    assert host_topology.hugetlbfs_sizes(tmp_path) == []  # no /proc/mounts entry


def test_the_facts_of_an_older_agent_still_parse() -> None:
    old = {"hostname": "h", "agent_version": "0.1", "cpus": 2, "memory_mib": 1024,
           "virt_type": "qemu", "libvirt_version": "9.0.0", "storage_dir": "/s",
           "console_dir": "/c", "storage_free": 1}
    facts = HostFacts.model_validate(old)
    assert (facts.cpu_list, facts.numa_nodes, facts.hugetlbfs) == (None, None, None)
    # and the engine places by the CPU count alone: CPUs 0..cpus-1 on one node
    placed = vm_placement.resolve(Hardware(cpu_pin="auto"), 1, old, "h")
    assert (placed.vcpu_pins, placed.emulator_cpus) == ((1,), (0,))


# -- pinning -------------------------------------------------------------------------------


@pytest.mark.parametrize(("facts", "vcpus", "pins", "emulator"), [
    # one node with a CPU to spare: its highest CPUs, CPU 0 left to the host
    (_facts(_node(0, "0-1")), 1, [1], [0]),
    # every CPU taken: the emulator threads share all of them
    (_facts(_node(0, "0-1")), 2, [0, 1], [0, 1]),
    # the first node that fits with room to spare
    (TWO_NODES, 3, [1, 2, 3], [0, 4, 5, 6, 7]),
    # no node fits with room to spare: the first that fits exactly
    (TWO_NODES, 4, [0, 1, 2, 3], [4, 5, 6, 7]),
    # a node too small for them: the bigger node, not split
    (_facts(_node(0, "0-1"), _node(1, "2-7")), 4, [4, 5, 6, 7], [0, 1, 2, 3]),
    # no node holds them all: spread, the biggest node first
    (_facts(_node(0, "0-2"), _node(1, "3-6")), 6, [1, 2, 3, 4, 5, 6], [0]),
])
def test_auto_pinning(facts: dict[str, Any], vcpus: int, pins: list[int],
                      emulator: list[int]) -> None:
    placed = vm_placement.resolve(Hardware(cpu_pin="auto"), vcpus, facts, "h1")
    assert (list(placed.vcpu_pins), list(placed.emulator_cpus)) == (pins, emulator)


def test_auto_pinning_counts_hot_pluggable_vcpus_and_refuses_too_many() -> None:
    placed = vm_placement.resolve(Hardware(cpu_pin="auto", cpu_max=3), 1, TWO_NODES, "h1")
    assert placed.vcpu_pins == (1, 2, 3)
    with pytest.raises(InsufficientResources) as info:
        vm_placement.resolve(Hardware(cpu_pin="auto"), 9, TWO_NODES, "h1")
    assert info.value.status == 409 and "9 vCPUs, host h1 has 8 CPUs" in info.value.message


def test_a_pin_list_names_cpus_the_host_has() -> None:
    placed = vm_placement.resolve(Hardware(cpu_pin="6,2"), 2, TWO_NODES, "h1")
    assert (placed.vcpu_pins, placed.emulator_cpus) == ((2, 6), (0, 1, 3, 4, 5, 7))
    with pytest.raises(Conflict) as info:
        vm_placement.resolve(Hardware(cpu_pin="6-9"), 4, TWO_NODES, "h1")
    assert info.value.status == 409 and info.value.field == "hardware.cpu_pin"
    assert "host CPUs 8,9 that host h1 does not have online (it has 0-7)" in info.value.message


def test_a_pin_list_has_one_cpu_per_vcpu() -> None:
    with pytest.raises(InvalidInput) as info:
        vm_placement.check_settings(Hardware(cpu_pin="0-2"), 2, 512)
    assert info.value.field == "hardware.cpu_pin" and "3 host CPUs for 2 vCPUs" in \
        info.value.message
    vm_placement.check_settings(Hardware(cpu_pin="0-3", cpu_max=4), 2, 512)  # hot-plug room


# -- guest NUMA ---------------------------------------------------------------------------


def test_numa_auto_mirrors_the_host_and_binds_cells_to_its_nodes() -> None:
    placed = vm_placement.resolve(Hardware(numa="auto"), 4, TWO_NODES, "h1")
    assert (placed.numa_cells, placed.numa_nodes) == (2, (0, 1))
    one_vcpu = vm_placement.resolve(Hardware(numa="auto"), 1, TWO_NODES, "h1")
    assert (one_vcpu.numa_cells, one_vcpu.numa_nodes) == (1, (0,))  # capped by the vCPUs


def test_numa_cells_follow_their_pinned_vcpus() -> None:
    """A host numbering its nodes' CPUs alternately (even: node 0, odd: node 1): vCPUs 0-1
    pinned on CPUs 1 and 3 (node 1), 2-3 on 4 and 6 (node 0): cells bound the same way.
    A list pins in its sorted order: vCPU i on the i-th lowest CPU."""
    interleaved = _facts(_node(0, "0,2,4,6"), _node(1, "1,3,5,7"))
    placed = vm_placement.resolve(Hardware(numa=2, cpu_pin="6,4,3,1"), 4, interleaved, "h1")
    assert (placed.vcpu_pins, placed.numa_nodes) == ((1, 3, 4, 6), (1, 0))


def test_more_cells_than_host_nodes_are_left_unbound() -> None:
    one = _facts(_node(0, "0-1"))
    placed = vm_placement.resolve(Hardware(numa=2), 2, one, "h1")
    assert (placed.numa_cells, placed.numa_nodes) == (2, ())
    # nodes without memory cannot hold a cell's memory
    memoryless = _facts(_node(0, "0-1"), _node(1, "2-3", memory_mib=0))
    assert vm_placement.resolve(Hardware(numa=2), 2, memoryless, "h1").numa_nodes == ()


def test_more_cells_than_vcpus_is_a_422() -> None:
    with pytest.raises(InvalidInput) as info:
        vm_placement.check_settings(Hardware(numa=3), 2, 512)
    assert info.value.field == "hardware.numa"


# -- huge pages ---------------------------------------------------------------------------


def test_huge_pages_free_enough_across_the_host() -> None:
    vm_placement.check_hugepages(Hardware(hugepages="2M"), 1, 1024, TWO_NODES, "h1")  # 512
    with pytest.raises(InsufficientResources) as info:
        vm_placement.check_hugepages(Hardware(hugepages="2M"), 1, 2048, TWO_NODES, "h1")
    assert info.value.field == "hardware.hugepages"
    assert "needs 1024 free 2M huge pages (2048 MiB); host h1 has 612 free (of 1024)" in \
        info.value.message


def test_huge_pages_of_bound_cells_come_from_their_nodes() -> None:
    """Two cells of 256 pages: node 1 has them, node 0 only 100."""
    with pytest.raises(InsufficientResources) as info:
        vm_placement.check_hugepages(Hardware(hugepages="2M", numa=2), 2, 1024, TWO_NODES, "h1")
    assert "256 free 2M huge pages on NUMA node 0 of host h1, which has 100 free (of 512)" \
        in info.value.message


@pytest.mark.parametrize(("facts", "words"), [
    (TWO_NODES, "needs 1 free 1G huge pages"),
    (_facts(_node(0, "0-1", 512, 512), mounts=[]), "no hugetlbfs mounted for 2M pages"),
    ({"cpus": 2, "memory_mib": 4096}, "does not report its huge pages"),
])
def test_huge_pages_refused_with_the_reason(facts: dict[str, Any], words: str) -> None:
    size = "1G" if "1G" in words else "2M"
    with pytest.raises(InsufficientResources) as info:
        vm_placement.check_hugepages(Hardware(hugepages=size), 1, 1024, facts, "h1")  # type: ignore[arg-type]
    assert words in info.value.message and info.value.status == 409


def test_memory_of_whole_huge_pages() -> None:
    with pytest.raises(InvalidInput) as info:
        vm_placement.check_settings(Hardware(hugepages="1G"), 1, 1536)
    assert info.value.field == "hardware.hugepages" and "1536 MiB" in info.value.message


# -- through the API -----------------------------------------------------------------------


class Agent:
    """The host's agent: its facts (``facts``, changed by tests), the rest done."""

    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts
        self.calls: list[tuple[str, str]] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.calls.append((req.method, req.url.path))
        if req.url.path == "/v1/host":
            return httpx.Response(200, json={
                "hostname": "h1", "agent_version": "test", "virt_type": "qemu",
                "libvirt_version": "9.0.0", "storage_dir": "/s", "console_dir": "/c",
                "storage_free": 1 << 40, **self.facts})
        m = req.url.path.removeprefix("/v1/domains/").split("/")
        body = json.loads(req.content) if req.content else {}
        return httpx.Response(200, json={"name": m[0], "uuid": "u", "state": "stopped",
                                         "path": "/x", "size": 1, "deleted": True, **body})


@pytest.fixture()
def agent() -> Agent:
    return Agent(TWO_NODES)


@pytest.fixture()
def ctx(tmp_path: Path, agent: Agent) -> Iterator[EngineContext]:
    """Host h1 with two NUMA nodes (stored facts: node 0 has 100 free 2M pages, node 1
    512); ``idle``: a stopped VM with 2M huge pages and 1 GiB (512 pages)."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(agent)
    with ctx.db.session() as s:
        node = seed_node(s, str(tmp_path / "storage"), str(tmp_path))
        node.facts = {**node.facts, **TWO_NODES}
        image, net = s.query(Image).one(), s.query(Network).one()
        vm = Vm(name="idle", image_id=image.id, host_id=node.id, cpus=2, memory_mib=1024,
                disk_bytes=64 << 20, state="stopped", desired_power="stopped",
                hardware={"hugepages": "2M", "cpu_pin": "auto", "numa": "auto"})
        s.add(vm)
        s.flush()
        s.add(Nic(vm_id=vm.id, network_id=net.id, mac="52:54:00:00:00:07", idx=0))
    try:
        yield ctx
    finally:
        ctx.ops.shutdown()


@pytest.fixture()
def client(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)


def _vm_names(ctx: EngineContext) -> list[str]:
    with ctx.db.session() as s:
        return sorted(v.name for v in s.query(Vm))


def _create(client: TestClient, name: str, **hardware: Any) -> httpx.Response:
    body = {"name": name, "image": "tiny", "cpus": 2, "memory": "1G", "hardware": hardware}
    return client.post("/api/v1/vms", json={**body, "start": hardware.pop("start", False)})


def test_hosts_show_their_cpus_nodes_and_huge_pages(client: TestClient) -> None:
    host = client.get("/api/v1/hosts").json()[0]
    assert host["cpu_list"] == "0-7"
    assert [(n["id"], n["cpus"], n["memory_mib"]) for n in host["numa_nodes"]] == \
        [(0, "0-3", 4096), (1, "4-7", 4096)]
    assert host["numa_nodes"][0]["hugepages"] == [{"size": "2M", "total": 512, "free": 100},
                                                  {"size": "1G", "total": 0, "free": 0}]


def test_a_placed_vm_is_designed_from_its_hosts_facts(ctx: EngineContext) -> None:
    """``idle`` (2 vCPUs, 1 GiB, auto pinning and NUMA, 2M pages): both vCPUs on node 0's
    highest CPUs, the emulator on the others, two cells whose memory node 0 holds."""
    with ctx.db.session() as s:
        vm_id = s.query(Vm).filter_by(name="idle").one().id
    dom = Domain.from_xml(vm_design.domain_xml(ctx, vm_id)[2])
    assert [(p.vcpu, p.cpuset) for p in dom.cputune.vcpupins] == [(0, "2"), (1, "3")]
    assert dom.cputune.emulatorpin_cpuset == "0,1,4-7"
    assert [(c.cpus, c.memory) for c in dom.cpu.numa.cells] == [("0", 512 * 1024),
                                                                 ("1", 512 * 1024)]
    assert [m.nodeset for m in dom.numatune.memnodes] == ["0", "0"]
    assert [p.size for p in dom.memory_backing.hugepages.pages] == [2048]


def test_a_create_with_placement_is_taken(client: TestClient) -> None:
    resp = _create(client, "db", cpu_pin="0,1", numa=2, hugepages="2M")
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(("hardware", "status", "field", "words"), [
    ({"cpu_pin": "0-2"}, 422, "hardware.cpu_pin", "3 host CPUs for 2 vCPUs"),
    ({"cpu_pin": "7-8"}, 409, "hardware.cpu_pin", "host CPUs 8 that host h1 does not have"),
    ({"cpu_pin": "x"}, 422, "hardware.cpu_pin", "not a CPU number"),
    ({"numa": 3}, 422, "hardware.numa", "3 NUMA cells need at least 3 vCPUs"),
    ({"numa": 0}, 422, "hardware.numa", "auto or a number of guest cells"),
    ({"hugepages": "4M"}, 422, "hardware.hugepages", ""),
    ({"hugepages": "1G", "start": True}, 409, "hardware.hugepages",
     "needs 1 free 1G huge pages"),
])
def test_refused_creates_leave_nothing(ctx: EngineContext, client: TestClient,
                                       hardware: dict[str, Any], status: int, field: str,
                                       words: str) -> None:
    resp = _create(client, "bad", **hardware)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["field"] == field and words in error["message"]
    assert _vm_names(ctx) == ["idle"]


def test_huge_pages_are_checked_against_the_hosts_free_pages_now(
        client: TestClient, agent: Agent) -> None:
    """The stored facts say 612 pages are free; the agent, asked at the start, says 10."""
    agent.facts = _facts(_node(0, "0-3", free_2m=10, total_2m=512), _node(1, "4-7"))
    resp = _create(client, "big", hugepages="2M", start=True)
    assert resp.status_code == 409
    assert "needs 512 free 2M huge pages (1024 MiB); host h1 has 10 free (of 512)" in \
        resp.json()["error"]["message"]
    assert ("GET", "/v1/host") in agent.calls
    assert not [c for c in agent.calls if c[1].startswith("/v1/domains")]  # nothing defined
    assert client.get("/api/v1/hosts").json()[0]["numa_nodes"][0]["hugepages"][0]["free"] == 10


def test_a_start_without_free_huge_pages_is_a_409(ctx: EngineContext, client: TestClient,
                                                  agent: Agent) -> None:
    agent.facts = _facts(_node(0, "0-3"), _node(1, "4-7", free_2m=100, total_2m=100))
    resp = client.put("/api/v1/vms/idle/state", json={"action": "start"})
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["field"]) == ("insufficient_resources", "hardware.hugepages")
    assert "512 free 2M huge pages on NUMA node 0 of host h1, which has 0 free" in \
        error["message"]  # both vCPUs pinned on node 0: both cells' memory there
    with ctx.db.session() as s:
        assert s.query(Vm).filter_by(name="idle").one().desired_power == "stopped"
    agent.facts = _facts(_node(0, "0-3", free_2m=512, total_2m=512), _node(1, "4-7"))
    assert client.put("/api/v1/vms/idle/state", json={"action": "start"}).status_code == 202


def test_vm_set_checks_a_pin_list_against_the_host(ctx: EngineContext,
                                                   client: TestClient) -> None:
    resp = client.patch("/api/v1/vms/idle", json={"hardware": {"cpu_pin": "0,12"}})
    assert resp.status_code == 409 and "12" in resp.json()["error"]["message"]
    resp = client.patch("/api/v1/vms/idle", json={"hardware": {"cpu_pin": "0"}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "hardware.cpu_pin"
    resp = client.patch("/api/v1/vms/idle", json={"hardware": {"cpu_pin": "5,4",
                                                               "hugepages": None}})
    assert resp.status_code == 202, resp.text
    client.get(f"/api/v1/operations/{resp.json()['id']}/wait", params={"timeout": 30})
    hw = client.get("/api/v1/vms/idle").json()["hardware"]
    assert (hw["cpu_pin"], hw["hugepages"], hw["numa"]) == ("4,5", None, "auto")


def test_a_refresh_keeps_the_hosts_other_facts(ctx: EngineContext) -> None:
    """Only the placement keys of a host's stored facts are asked anew."""
    with ctx.db.session() as s:
        host = s.query(Host).one()
        host.facts = {**host.facts, "address": "10.0.0.1"}
    with ctx.db.session() as s:
        host_id = s.query(Host).one().id
    fresh = hosts.refresh_placement(ctx, host_id)
    assert fresh["address"] == "10.0.0.1" and fresh["cpu_list"] == list(range(8))
