"""VM creation places through the scheduler (corral.engine.scheduler) over the API: spread
and pack, required host tags, a pinned host that must still pass every rule, the dry run
that creates nothing, a VM's placement now, and concurrent creates that never overbook a
host. The hosts' agents are stand-ins (sched_seed)."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import serving
from sched_seed import engine

from corral.engine.app import create_app
from corral.engine.db.models import Host, Operation, Vm

THREE = [{}, {}, {}]  # h1-h3: 2 CPUs, 2048 MiB each


def _refusal(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 409, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == "insufficient_resources"
    return error


def test_spread_puts_each_new_vm_on_the_host_with_most_room(tmp_path: Path) -> None:
    with engine(tmp_path, THREE) as e:
        for i in range(6):
            assert e.create(f"vm{i}").status_code == 202
        assert e.counts() == {"h1": 2, "h2": 2, "h3": 2}
        shown = e.client.get("/api/v1/vms/vm0").json()
        assert shown["host"] in ("h1", "h2", "h3") and shown["group"] is None


def test_pack_fills_one_host_before_the_next(tmp_path: Path) -> None:
    with engine(tmp_path, THREE, placement="pack") as e:
        for i in range(5):  # 4 x 512 MiB fill a 2048 MiB host (memory overcommit 1.0)
            assert e.create(f"vm{i}").status_code == 202
        assert sorted(e.counts().values()) == [1, 4]


def test_a_full_cluster_refuses_with_every_hosts_reason(tmp_path: Path) -> None:
    with engine(tmp_path, [{"memory_mib": 1024}, {"memory_mib": 1024, "status": "maintenance"}]
                ) as e:
        assert e.create("a", memory="1G").status_code == 202
        error = _refusal(e.create("b", memory="1G"))
        assert "no host can take b" in error["message"]
        hosts = error["details"]["hosts"]
        assert hosts["h1"] == ["memory: needs 1024 MiB, 0 MiB free of 1024 MiB x1.0"]
        assert hosts["h2"] == ["state: maintenance, needs up"]
        assert set(e.placed()) == {"a"}


def test_cpu_overcommit_is_the_engines_setting(tmp_path: Path) -> None:
    with engine(tmp_path, [{"cpus": 2}], cpu_overcommit=2.0) as e:
        assert e.create("a", cpus=4, memory="64M").status_code == 202
        error = _refusal(e.create("b", cpus=1, memory="64M"))
        assert error["details"]["hosts"]["h1"] == [
            "vCPUs: needs 1, 0 free of 2 x2.0 (4 allocated)"]


def test_required_host_tags_choose_among_the_hosts_that_have_them(tmp_path: Path) -> None:
    with engine(tmp_path, [{}, {"tags": ["ssd"]}, {"tags": ["ssd", "gpu"]}]) as e:
        for i in range(2):
            assert e.create(f"fast{i}", host_tags=["ssd"]).status_code == 202
        assert e.create("gpu", host_tags=["gpu", "ssd"]).status_code == 202
        placed = e.placed()
        assert {placed["fast0"], placed["fast1"]} == {"h2", "h3"} and placed["gpu"] == "h3"
        error = _refusal(e.create("nv", host_tags=["nvme"]))
        assert "refused by tags on 3" in error["message"]
        assert error["details"]["hosts"]["h3"] == ["tags: lacks nvme (has gpu, ssd)"]
        vm = e.client.get("/api/v1/vms/gpu/placement").json()
        assert "tags gpu, ssd" in vm["request"]  # kept with the VM: later placements ask it


def test_a_pinned_host_is_taken_only_when_it_passes_every_rule(tmp_path: Path) -> None:
    with engine(tmp_path, [{"memory_mib": 1024}, {"memory_mib": 4096, "tags": ["ssd"]}]) as e:
        assert e.create("pinned", host="h1").status_code == 202  # spread alone: h2
        assert e.placed()["pinned"] == "h1"
        error = _refusal(e.create("big", host="h1", memory="1G"))
        assert error["message"] == ("no host can take big: pinned host h1 refuses it: memory: "
                                    "needs 1024 MiB, 512 MiB free of 1024 MiB x1.0")
        error = _refusal(e.create("fast", host="h1", host_tags=["ssd"]))
        assert "pinned host h1 refuses it: tags: lacks ssd (has none)" in error["message"]
        missing = e.create("x", host="nope")
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "host"
        assert set(e.placed()) == {"pinned"}


def test_explain_is_a_dry_run_that_judges_every_host(tmp_path: Path) -> None:
    with engine(tmp_path, [{}, {"memory_mib": 256}, {"status": "unresponsive"}]) as e:
        resp = e.client.post("/api/v1/vms", params={"explain": "true"},
                             json={"name": "web", "image": "tiny", "memory": "512M"})
        assert resp.status_code == 200, resp.text
        p = resp.json()
        assert p["chosen"] == "h1" and p["summary"] is None
        verdicts = {v["host"]: v for v in p["hosts"]}
        assert verdicts["h1"]["eligible"] and verdicts["h1"]["rank"] == 1
        assert verdicts["h1"]["free_memory_mib_after"] == 1536
        assert verdicts["h2"]["reasons"] == [
            {"filter": "memory", "detail": "needs 512 MiB, 256 MiB free of 256 MiB x1.0"}]
        assert verdicts["h3"]["reasons"][0]["filter"] == "state"
        text = "\n".join(p["text"])
        assert "chosen: h1" in text and "unresponsive, needs up" in text
        refused = e.client.post("/api/v1/vms", params={"explain": "true"}, json={
            "name": "web", "image": "tiny", "memory": "4G"}).json()
        assert refused["chosen"] is None and refused["summary"].endswith("refused by memory on 3, state on 1")
        with e.ctx.db.session() as s:
            assert s.query(Vm).count() == 0 and s.query(Operation).count() == 0


def test_placement_of_a_vm_says_where_it_runs_and_how_each_host_is_judged(
        tmp_path: Path) -> None:
    with engine(tmp_path, [{}, {"memory_mib": 256}]) as e:
        assert e.create("web").status_code == 202
        p = e.client.get("/api/v1/vms/web/placement").json()
        assert p["current"] == "h1" and p["chosen"] == "h1"
        assert "runs on: h1" in "\n".join(p["text"])
        # its own 512 MiB is left out: h1 is judged as empty
        assert p["hosts"][0]["free_memory_mib_after"] == 1536
        assert e.client.get("/api/v1/vms/nope/placement").status_code == 404


def test_concurrent_creates_never_overbook_a_host(tmp_path: Path) -> None:
    """Room for K = 6 VMs (3 hosts x 2 x 512 MiB); 12 creates at once: exactly 6 win."""
    hosts = [{"memory_mib": 1024}] * 3
    with engine(tmp_path, hosts) as e, serving(create_app(e.ctx)) as url:
        barrier = threading.Barrier(12, timeout=30)
        answers: list[int] = []
        lock = threading.Lock()

        def create(i: int) -> None:
            with httpx.Client(base_url=url, timeout=60,
                              headers={"Authorization": f"Bearer {e.token}"}) as c:
                barrier.wait()
                resp = c.post("/api/v1/vms", json={"name": f"vm{i}", "image": "tiny",
                                                    "memory": "512M"})
            with lock:
                answers.append(resp.status_code)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not any(t.is_alive() for t in threads)
        assert Counter(answers) == {202: 6, 409: 6}
        assert e.counts() == {"h1": 2, "h2": 2, "h3": 2}
        with e.ctx.db.session() as s:
            for host in s.query(Host):
                used = sum(m for (m,) in s.query(Vm.memory_mib).filter_by(host_id=host.id))
                assert used <= host.facts["memory_mib"], host.name


@pytest.mark.parametrize("tag", ["SSD", "a b", "x" * 64, ""])
def test_a_bad_required_tag_is_a_422(tmp_path: Path, tag: str) -> None:
    with engine(tmp_path, [{}]) as e:
        resp = e.create("web", host_tags=[tag])
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"].startswith("host_tags")
