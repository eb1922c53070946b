"""Benchmark 2: how fast the API acknowledges an operation (request -> 202).

On one running, booted VM, ``PUT /api/v1/vms/{name}/state`` alternates pause and resume over
one kept-alive HTTPS connection (httpx); only the PUT round trip is timed, and each operation
is waited for (untimed) before the next request. For context, in the same run:

- the HTTP floor: ``GET /api/v1/health`` on the same connection (no auth, no DB);
- completion: PUT -> operation success, against ``virsh suspend`` / ``virsh resume`` of the
  same VM (the raw tool).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchnode import BenchNode
from corral.api import VmCreate
from guests import wait_booted
from m_createstart import CPUS, IMAGE, MEMORY
from timing import BenchError, say, wait_running

VM = "ba-ack"
WARMUP = 4


@dataclass
class AckResult:
    ack_s: list[float] = field(default_factory=list)  # PUT -> 202
    done_s: list[float] = field(default_factory=list)  # PUT -> operation success (wait)
    health_s: list[float] = field(default_factory=list)  # GET /api/v1/health
    virsh_s: list[float] = field(default_factory=list)  # virsh suspend/resume
    boot_s: float = 0.0


def start_vm(node: BenchNode, conn: Any) -> float:
    """Create and start the VM, and wait until the guest has booted (seconds it took)."""
    with node.client() as client:
        t0 = time.perf_counter()
        op = client.create_vm(VmCreate(name=VM, image=IMAGE, memory=MEMORY, cpus=CPUS, start=True))
        wait_running(conn, VM, t0, 60)
        client.wait(op.id, timeout=120)
        wait_booted(client, [VM], timeout=180, every=0.5)
        return time.perf_counter() - t0


def _put(http: httpx.Client, action: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    resp = http.put(f"/api/v1/vms/{VM}/state", json={"action": action})
    elapsed = time.perf_counter() - t0
    if resp.status_code != 202:
        raise BenchError(f"PUT {action} answered {resp.status_code}: {resp.text[:300]}")
    return elapsed, str(resp.json()["id"])


def _wait(http: httpx.Client, op_id: str) -> None:
    resp = http.get(f"/api/v1/operations/{op_id}/wait", params={"timeout": 60}, timeout=90)
    op = resp.json()
    if resp.status_code != 200 or op.get("status") != "success":
        raise BenchError(f"operation {op_id}: {resp.status_code} {op}")


def run(node: BenchNode, conn: Any, requests: int) -> AckResult:
    res = AckResult()
    say(f"ack latency: starting {VM} and waiting for its guest to boot")
    res.boot_s = start_vm(node, conn)
    cfg = node.config()
    headers = {"Authorization": f"Bearer {cfg['token']}"}
    with httpx.Client(base_url=node.url, headers=headers, verify=cfg["ca"], timeout=30) as http:
        actions = ["pause", "resume"]
        for i in range(WARMUP):  # connection, TLS session and first-request costs
            _, op_id = _put(http, actions[i % 2])
            _wait(http, op_id)
        for i in range(requests):
            t0 = time.perf_counter()
            elapsed, op_id = _put(http, actions[i % 2])
            _wait(http, op_id)
            res.done_s.append(time.perf_counter() - t0)
            res.ack_s.append(elapsed)
            if (i + 1) % 25 == 0:
                say(f"ack latency: {i + 1}/{requests} requests")
        for _ in range(requests):
            t0 = time.perf_counter()
            resp = http.get("/api/v1/health")
            res.health_s.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                raise BenchError(f"GET /api/v1/health answered {resp.status_code}")
    # The raw tool: the same pause/resume with virsh (the VM ends running, as it started).
    raw = min(requests, 40)
    for i in range(raw - raw % 2):
        verb = "suspend" if i % 2 == 0 else "resume"
        t0 = time.perf_counter()
        proc = subprocess.run(["virsh", "-c", node.uri, verb, VM], capture_output=True, text=True,
                              timeout=60, check=False)
        res.virsh_s.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise BenchError(f"virsh {verb} {VM} failed: {proc.stderr.strip()}")
    return res
