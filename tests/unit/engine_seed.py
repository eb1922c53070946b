"""The engine the API unit tests start from: one up host, the tiny image and the default NAT
network in a fresh database, and an admin client (no agent: tests fake it where they need)."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Network
from corral.engine.services.auth import create_token


def seed_node(s: Session, storage_dir: str, console_dir: str,
              dns_domain: str | None = None) -> Host:
    """Host ``h1`` (4 GiB, 2 CPUs, TCG), image ``tiny`` (64 MiB) and network ``default``
    (10.210.0.0/24, DHCP .128-.254); the host, flushed (its id is set)."""
    host = Host(name="h1", url="http://127.0.0.1:9", status="up",
                facts={"memory_mib": 4096, "cpus": 2, "virt_type": "qemu",
                       "storage_dir": storage_dir, "console_dir": console_dir})
    s.add(host)
    s.add(Image(name="tiny", status="ready", virtual_size=64 << 20, file_size=1 << 20))
    s.add(Network(name="default", bridge="corral0", subnet="10.210.0.0/24",
                  gateway="10.210.0.1", dhcp_start="10.210.0.128", dhcp_end="10.210.0.254",
                  dns_domain=dns_domain))
    s.flush()
    return host


def admin_client(ctx: EngineContext) -> TestClient:
    token = create_token(ctx, "admin")
    return TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"})
