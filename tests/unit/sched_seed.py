"""An engine with several stand-in hosts for the placement tests (test_vm_scheduling,
test_vm_groups, test_host_tags): hosts ``h1``.. with the CPUs, memory and tags asked, the
tiny image and the default network; the agents are api_server.QuickHost, held closed so
that create operations stay in flight (their VM rows, the reservations, stay put) until
the engine is closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from api_server import QuickHost
from fastapi.testclient import TestClient

from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Vm
from corral.engine.services.auth import create_token


@dataclass
class Engine:
    client: TestClient
    ctx: EngineContext
    agent: QuickHost
    token: str

    def create(self, name: str, **body: Any) -> httpx.Response:
        return self.client.post("/api/v1/vms", json={"name": name, "image": "tiny",
                                                      "memory": "512M", **body})

    def placed(self) -> dict[str, str]:
        """VM -> the host its row is on (the reservation)."""
        with self.ctx.db.session() as s:
            return {vm: host for vm, host in s.query(Vm.name, Host.name).join(
                Host, Vm.host_id == Host.id)}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for host in self.placed().values():
            out[host] = out.get(host, 0) + 1
        return out


@contextmanager
def engine(tmp_path: Path, hosts: list[dict[str, Any]], **settings: Any) -> Iterator[Engine]:
    """``hosts``: one dict each (cpus, memory_mib, tags, status; name default h1, h2...)."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0, **settings))
    agent = QuickHost()
    agent.close()
    ctx.agent_transport = httpx.MockTransport(agent)
    with ctx.db.session() as s:
        for i, h in enumerate(hosts, 1):
            s.add(Host(name=h.get("name", f"h{i}"), url=f"http://127.0.0.{i}:9",
                       status=h.get("status", "up"), tags=sorted(h.get("tags", [])),
                       facts={"cpus": h.get("cpus", 2), "memory_mib": h.get("memory_mib", 2048),
                              "virt_type": "qemu", "storage_dir": str(tmp_path),
                              "console_dir": str(tmp_path)}))
        s.add(Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=1 << 20))
        s.add(Network(name="default", bridge="corral0", subnet="10.210.0.0/24",
                      gateway="10.210.0.1", dhcp_start="10.210.0.128",
                      dhcp_end="10.210.0.254"))
    token = create_token(ctx, "admin")
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"})
    try:
        yield Engine(client, ctx, agent, token)
    finally:
        agent.open()  # the operations in flight end (they fail on the stand-in: no matter)
        ctx.ops.shutdown()
