"""The agent's HTTP API, called by the engine (the same path a remote host uses).

Memory: an idle agent holds only what its routes need to be registered and what every host
runs (libvirt, the network, the firewall). A route that only some hosts or rare requests run
(image download and import, libguestfs customization) imports its work inside the route, on
its first call, as corral.agent.image_api does; its body model too, with
corral.httpserve.validated. tests/unit/test_agent_imports.py keeps that so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request, WebSocket
from pydantic import BaseModel, ConfigDict

import corral
from corral.agent import clones, domain_routes, image_api, network, nic_routes, ova, port_routes
from corral.agent.console_relay import relay_console
from corral.agent.hypervisor import Hypervisor
from corral.agent.jobs import JobRunner
from corral.agent.jobs import router as jobs_router
from corral.agent.network import firewall
from corral.agent.pools import host_registry, root_routes
from corral.agent.pools.routes import router as pools_router
from corral.agent.specfile import written_first
from corral.agent.storage import Storage
from corral.agent_api.domains import HostFacts
from corral.errors import Conflict, CorralError, NotFound, Unauthorized
from corral.httpserve import bearer, install_error_handlers, same_secret
from corral.validation import validate_name
from corral.virt_type import detect_virt_type

log = logging.getLogger(__name__)


@dataclass
class AgentSettings:
    state_dir: Path
    token: str
    libvirt_uri: str = "qemu:///system"


class NetworkBody(BaseModel):
    """A network as the agent builds it (``corral.agent.network.NetworkSpec`` less its name)."""

    model_config = ConfigDict(extra="forbid")
    bridge: str
    subnet: str | None = None
    gateway: str | None = None
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    nat: bool = True
    dns_domain: str | None = None
    mode: str | None = None
    backend: str = "linuxbridge"
    vlan: int | None = None
    vni: int | None = None
    local: str | None = None
    peers: list[str] = []
    serve: bool = True


def _memory_bytes() -> int:
    """The host's RAM (MemTotal, as psutil.virtual_memory().total reads it; without psutil)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class Agent:
    """The host-local services behind the routes."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.hv = Hypervisor(settings.libvirt_uri)
        self.storage = Storage(settings.state_dir / "storage")
        self.console_dir = settings.state_dir / "console"
        self.net_dir = settings.state_dir / "networks"
        for d in (self.console_dir, self.net_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.virt = detect_virt_type()

    def facts(self) -> HostFacts:
        return HostFacts(
            hostname=socket.gethostname(),
            agent_version=corral.__version__,
            cpus=os.cpu_count() or 1,
            memory_mib=_memory_bytes() >> 20,
            virt_type=self.virt.type.value,
            virt_note=self.virt.note,
            libvirt_version=self.hv.version(),
            storage_dir=str(self.storage.root),
            console_dir=str(self.console_dir),
            storage_free=self.storage.free_bytes(),
            qos=firewall.qos_backend(),  # libvirt <bandwidth>, or nftables policing
        )

    # -- networks: specs are kept on disk so the agent rebuilds them at every start --------
    def _spec_file(self, name: str) -> Path:
        return self.net_dir / f"{validate_name(name, 'network')}.json"

    def ensure_network(self, name: str, body: NetworkBody) -> dict[str, bool]:
        """Build or repair a network. Its spec file is written first (an agent killed half-way
        finishes the job at its next start, or a delete finds what to remove) and taken back
        if the build fails (the network module has undone its part by then)."""
        spec = network.NetworkSpec(name=name, **body.model_dump())
        network.validate_spec(spec)
        with written_first(self._spec_file(name), body.model_dump_json()):
            network.ensure_network(spec, self.net_dir)
        return network.network_status(spec, self.net_dir)

    def _spec(self, name: str) -> network.NetworkSpec:
        path = self._spec_file(name)
        if not path.exists():
            raise NotFound(f"network {name} is not set up on this host")
        return network.NetworkSpec(name=name, **json.loads(path.read_text()))

    def _specs(self) -> list[network.NetworkSpec]:
        return [network.NetworkSpec(name=p.stem, **json.loads(p.read_text()))
                for p in sorted(self.net_dir.glob("*.json"))]

    def delete_network(self, name: str) -> bool:
        """Remove a network; False when this host has none of that name (idempotent)."""
        if not self._spec_file(name).exists():
            return False
        spec = self._spec(name)
        shared = any(o.bridge == spec.bridge for o in self._specs() if o.name != name)
        network.delete_network(spec, self.net_dir, keep_bridge=shared)
        self._spec_file(name).unlink(missing_ok=True)
        return True

    def network_status(self, name: str) -> dict[str, bool]:
        return network.network_status(self._spec(name), self.net_dir)

    def restore_networks(self) -> None:
        """Rebuild every network at start (host boot, agent restart); one that cannot be
        built is logged and left for the next ensure, never blocks the others."""
        for spec in self._specs():
            try:
                network.ensure_network(spec, self.net_dir)
            except CorralError as exc:
                log.error("network %s could not be restored: %s", spec.name, exc.message)



def create_app(settings: AgentSettings) -> FastAPI:
    agent = Agent(settings)
    agent.restore_networks()

    def auth(request: Request) -> None:
        if not same_secret(bearer(request), settings.token):
            raise Unauthorized("bad agent token")

    app = FastAPI(title="corral agent", version=corral.__version__)
    install_error_handlers(app)
    app.state.agent = agent
    hv, storage = agent.hv, agent.storage
    guarded = [Depends(auth)]
    # Long work (image import, customization) runs as jobs: see corral.agent.jobs.
    jobs = JobRunner()
    app.include_router(jobs_router(jobs), dependencies=guarded)
    app.include_router(image_api.router(agent, jobs), dependencies=guarded)
    # Storage pools, volumes and hot-plug of disks: see corral.agent.pools.
    app.include_router(pools_router(settings.state_dir, storage.root, hv), dependencies=guarded)
    # Root disks of VMs in pools (vm create --pool): see corral.agent.pools.roots.
    app.include_router(root_routes.router(settings.state_dir, storage, jobs), dependencies=guarded)
    # Snapshots, linked/full clones and templates: see corral.agent.clones.
    app.include_router(clones.router(storage, hv, jobs, after_start=lambda: ports.sync_ovs()),
                       dependencies=guarded)
    app.include_router(ova.router(storage, jobs, host_registry(settings.state_dir, storage.root)),
                       dependencies=guarded)  # OVA export/import
    # NIC hot-plug and static DHCP leases: see corral.agent.nic_routes.
    # Ports: NIC anti-spoofing and security groups (nftables; OpenFlow flows on OVS networks),
    # re-applied at every start; OVS flows need the tap: synced after a start or hot-plug.
    ports = port_routes.make_firewall(settings.state_dir, agent._spec, agent.net_dir)
    ports.restore()
    app.include_router(nic_routes.router(hv, agent._spec, agent.net_dir,
                                         after_plug=ports.sync_ovs), dependencies=guarded)
    app.include_router(port_routes.router(ports), dependencies=guarded)

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # Domains, root disks, seeds and host facts: see corral.agent.domain_routes.
    app.include_router(domain_routes.router(hv, storage, agent.console_dir, agent.facts,
                                            after_start=ports.sync_ovs), dependencies=guarded)

    @app.websocket("/v1/domains/{name}/console")
    async def console(ws: WebSocket, name: str) -> None:
        if not same_secret(ws.headers.get("authorization", "").removeprefix("Bearer "),
                           settings.token):
            await ws.close(code=4401)
            return
        await ws.accept()
        await relay_console(ws, hv, name)

    @app.post("/v1/images/{name}/build-tiny", dependencies=guarded)
    def build_tiny(name: str) -> dict[str, Any]:
        return storage.build_tiny(name).to_dict()

    @app.get("/v1/images/{name}", dependencies=guarded)
    def image(name: str) -> dict[str, Any]:
        return {**storage.describe(name).to_dict(), "users": storage.disk_in_use_by(name)}

    @app.delete("/v1/images/{name}", dependencies=guarded)
    def delete_image(name: str) -> dict[str, bool]:
        job = jobs.running(f"image:{validate_name(name, 'image')}")
        if job is not None:
            raise Conflict(f"image {name} is busy: {job.kind} job {job.id} runs on it")
        storage.delete_image(name)
        return {"deleted": True}

    @app.put("/v1/networks/{name}", dependencies=guarded)
    def ensure_network(name: str, body: NetworkBody) -> dict[str, bool]:
        return agent.ensure_network(name, body)

    @app.delete("/v1/networks/{name}", dependencies=guarded)
    def delete_network(name: str) -> dict[str, bool]:
        return {"deleted": agent.delete_network(name)}

    @app.get("/v1/networks/{name}", dependencies=guarded)
    def network_status(name: str) -> dict[str, bool]:
        return agent.network_status(name)

    @app.post("/v1/networks/{name}/check", dependencies=guarded)
    def check_network(name: str, body: NetworkBody) -> dict[str, bool]:
        network.check_network(network.NetworkSpec(name=name, **body.model_dump()))
        return {"ok": True}

    @app.get("/v1/networks/{name}/leases", dependencies=guarded)
    def leases(name: str) -> list[dict[str, Any]]:
        return [vars(lease) for lease in network.leases(agent._spec(name), agent.net_dir)]

    return app
