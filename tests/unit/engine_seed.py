"""The engine the API unit tests start from: one up host, the tiny image and the default NAT
network in a fresh database, and clients of an admin, of a user of a role, or of a login (no
agent unless a test brings a stand-in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from corral.api import CloudInit
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Network, Nic, Vm
from corral.engine.services import users, vm_cloudinit
from corral.engine.services.auth import create_token

PASSWORD = "correct horse battery"  # good enough for the strength check
Agent = Callable[[httpx.Request], httpx.Response]  # a stand-in agent (api_server.QuickHost)
Prepare = Callable[[Session, Host], object]  # more rows, next to what seed_node adds


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


def seeded_context(data_dir: Path, scratch: Path, agent: Agent | None = None,
                   prepare: Prepare | None = None) -> EngineContext:
    """An engine on ``data_dir`` seeded by seed_node (its storage and console dirs under
    ``scratch``), then by ``prepare``; its agents are ``agent``, else unreachable."""
    ctx = build_context(EngineSettings(data_dir=data_dir, agent_reconnect_s=0))
    if agent is not None:
        ctx.agent_transport = httpx.MockTransport(agent)
    with ctx.db.session() as s:
        host = seed_node(s, str(scratch / "storage"), str(scratch / "console"))
        if prepare is not None:
            prepare(s, host)
    return ctx


def engine_context(tmp_path: Path, agent: Agent | None = None,
                   prepare: Prepare | None = None) -> Iterator[EngineContext]:
    """The body of a test's ``ctx`` fixture (``yield from engine_context(tmp_path)``): the
    seeded engine, its operation workers stopped after the test."""
    ctx = seeded_context(tmp_path, tmp_path, agent, prepare)
    try:
        yield ctx
    finally:
        ctx.ops.shutdown()


def user_token(ctx: EngineContext, role: str, name: str | None = None, token: str = "t") -> str:
    """The secret of the API token ``token`` of a new user ``name`` (``u-ROLE`` by default)
    of ``role``, made without a password."""
    name = name or f"u-{role}"
    users.create(ctx, name, role, None)
    return create_token(ctx, token, role, user=name)


def client_as(ctx: EngineContext, role: str, name: str | None = None,
              token: str = "t") -> TestClient:
    """A client with the API token of user_token(ctx, role, name, token)."""
    secret = user_token(ctx, role, name, token)
    return TestClient(create_app(ctx), headers={"Authorization": f"Bearer {secret}"})


def login(ctx: EngineContext, name: str, password: str = PASSWORD) -> TestClient:
    """A client with the session token of ``name``'s login (which must succeed)."""
    anon = TestClient(create_app(ctx))
    resp = anon.post("/api/v1/login", json={"username": name, "password": password})
    assert resp.status_code == 200, resp.text
    return TestClient(create_app(ctx), headers={"Authorization": f"Bearer {resp.json()['token']}"})


def add_stopped_vm(s: Session, host: Host, cloud_init: CloudInit, name: str = "idle") -> Vm:
    """A stopped VM on ``host`` as a finished create leaves it: the tiny image, 64 MiB, one
    NIC on ``default``, these cloud-init settings."""
    vm = Vm(name=name, image_id=s.query(Image).filter_by(name="tiny").one().id,
            host_id=host.id, cpus=1, memory_mib=64, disk_bytes=64 << 20, state="stopped",
            desired_power="stopped", cloud_init=vm_cloudinit.stored(cloud_init))
    s.add(vm)
    s.flush()
    s.add(Nic(vm_id=vm.id, network_id=s.query(Network).filter_by(name="default").one().id,
              mac="52:54:00:00:00:02", idx=0))
    return vm
