"""The agent's HTTP API, called by the engine (the same path a remote host uses).

Memory: an idle agent holds only what its routes need to be registered and what every host
runs (libvirt, the network, the firewall). A route that only some hosts or rare requests run
(image download and import, libguestfs customization) imports its work inside the route, on
its first call, as corral.agent.image_api does; its body model too, with
corral.httpserve.validated. tests/unit/test_agent_imports.py keeps that so.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, WebSocket

import corral
from corral.agent import (
    clones,
    domain_routes,
    guest_routes,
    host_facts,
    host_routes,
    host_topology,
    image_api,
    image_files,
    migration_routes,
    network_routes,
    nic_routes,
    ova,
    port_routes,
    stats_routes,
    vm_files,
)
from corral.agent.console_relay import relay_console
from corral.agent.guard_link import GuardLink, refuse_start_if_fenced
from corral.agent.hypervisor import Hypervisor
from corral.agent.jobs import JobRunner
from corral.agent.jobs import router as jobs_router
from corral.agent.network import firewall
from corral.agent.pools import host_registry, root_routes
from corral.agent.pools.routes import router as pools_router
from corral.agent.storage import Storage
from corral.agent.vm_stats import StatsSampler
from corral.agent.vnc_relay import relay_vnc
from corral.agent_api.domains import HostFacts
from corral.errors import NotFound
from corral.httpserve import BodyLimit, install_error_handlers
from corral.safepaths import PathPolicy
from corral.safeurls import UrlPolicy
from corral.virt_type import detect_virt_type

log = logging.getLogger(__name__)


@dataclass
class AgentSettings:
    state_dir: Path
    libvirt_uri: str = "qemu:///system"
    # Where image and OVA imports may read local files (corral.safepaths); None:
    # STATE_DIR/import, made at start. `corral up` passes DATA_DIR/import and --import-dir's.
    import_dirs: tuple[Path, ...] | None = None
    # Ranges an import URL may reach although they are loopback, link-local or this host's
    # (corral.safeurls): e.g. a local mirror; none by default.
    import_allow_cidrs: tuple[str, ...] = ()
    # More of corral's own directories, never read or written for a user nor a pool (the
    # engine's data dir, which holds its database: `corral up` passes it).
    protected_dirs: tuple[Path, ...] = ()
    # What `corral host reboot|shutdown` runs here (`--reboot-command`, `--poweroff-command`).
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    poweroff_command: tuple[str, ...] = ("systemctl", "poweroff")


_ROOT = Path("/")  # where sysfs and procfs are (host_topology reads made-up trees in tests)


def _memory_bytes() -> int:
    """The host's RAM (MemTotal, as psutil.virtual_memory().total reads it; without psutil)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _domain_state(hv: Hypervisor, vm: str) -> str | None:
    """The state of VM ``vm``'s domain here; None: no such domain."""
    try:
        return str(hv.get(vm).state)
    except NotFound:
        return None


class Agent:
    """The host-local services behind the routes."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.hv = Hypervisor(settings.libvirt_uri)
        # The host's lease guard (`corral agent guard`), None without one: while its lease
        # has lapsed this host starts no domain (the engine may run them elsewhere already).
        self.guard = GuardLink.from_env()
        self.hv.start_gate = lambda: refuse_start_if_fenced(self.guard)
        self.storage = Storage(settings.state_dir / "storage")
        # At start the agent knows no jobs: every partial file is a leftover of one that died
        # with an earlier agent (its children died with it: corral.agent.children).
        self.leftovers = [*self.storage.sweep_leftovers(),
                          *host_registry(settings.state_dir, self.storage.root).sweep_leftovers()]
        self.console_dir = settings.state_dir / "console"
        self.net_dir = settings.state_dir / "networks"
        for d in (self.console_dir, self.net_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.virt = detect_virt_type()
        self.networks = network_routes.Networks(self.net_dir)
        if settings.import_dirs is None:
            self.import_dirs: tuple[Path, ...] = (settings.state_dir / "import",)
            self.import_dirs[0].mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            self.import_dirs = tuple(settings.import_dirs)
        self.url_policy = UrlPolicy.build(settings.import_allow_cidrs)  # bad CIDRs: at start

    def path_policy(self) -> PathPolicy:
        """What a user may name for this host's files to read or write (corral.safepaths):
        its pools as they are now."""
        return PathPolicy(import_dirs=self.import_dirs,
                          protected=(self.settings.state_dir, *self.settings.protected_dirs),
                          pools=tuple(host_registry(self.settings.state_dir,
                                                    self.storage.root).paths()),
                          pool_homes=(self.storage.root / "pools",))

    def facts(self) -> HostFacts:
        return HostFacts(
            hostname=socket.gethostname(),
            agent_version=corral.__version__,
            cpus=os.cpu_count() or 1,
            memory_mib=_memory_bytes() >> 20,
            virt_type=self.virt.type.value,
            virt_note=self.virt.note,
            libvirt_version=self.hv.version(),
            state_dir=str(self.settings.state_dir),
            storage_dir=str(self.storage.root),
            console_dir=str(self.console_dir),
            storage_free=self.storage.free_bytes(),
            qos=firewall.qos_backend(),  # libvirt <bandwidth>, or nftables policing
            cpu_list=host_topology.online_cpus(_ROOT),  # placement: pinning, NUMA, huge pages
            numa_nodes=host_topology.numa_nodes(_ROOT),
            hugetlbfs=host_topology.hugetlbfs_sizes(_ROOT),
            # CPU model/flags and usable models, QEMU version, free memory
            **host_facts.reported(self.hv, self.virt.type.value),
        )


def create_app(settings: AgentSettings) -> FastAPI:
    agent = Agent(settings)
    agent.networks.restore()  # networks first: ports and NICs plug into them

    app = FastAPI(title="corral agent", version=corral.__version__)
    install_error_handlers(app)
    # image copies and a stopped VM's files (offline migration) stream
    app.add_middleware(BodyLimit, routes=(image_files.UPLOAD, vm_files.UPLOAD))
    app.state.agent = agent
    hv, storage = agent.hv, agent.storage
    # Who may call: decided by TLS before any route runs (corral.host_identity: only the
    # engine's client certificate passes the handshake).
    # Long work (image import, customization) runs as jobs: see corral.agent.jobs.
    jobs = JobRunner()
    app.state.jobs = jobs  # stopped on SIGTERM (corral.agent.__main__)
    app.include_router(jobs_router(jobs))
    app.include_router(image_api.router(agent, jobs))
    # Storage pools, volumes and hot-plug of disks: see corral.agent.pools.
    app.include_router(pools_router(settings.state_dir, storage.root, hv))
    # Root disks of VMs in pools (vm create --pool): see corral.agent.pools.roots.
    app.include_router(root_routes.router(settings.state_dir, storage, jobs))
    # Snapshots, linked/full clones and templates: see corral.agent.clones.
    app.include_router(clones.router(storage, hv, jobs, after_start=lambda: ports.sync_ovs()))
    app.include_router(ova.router(storage, jobs, host_registry(settings.state_dir, storage.root),
                                  agent.path_policy))  # OVA export/import
    # NIC hot-plug and static DHCP leases: see corral.agent.nic_routes.
    # Ports: NIC anti-spoofing and security groups (nftables; OpenFlow flows on OVS networks),
    # re-applied at every start; OVS flows need the tap: synced after a start or hot-plug.
    ports = port_routes.make_firewall(settings.state_dir, agent.networks.spec, agent.net_dir)
    ports.restore()
    app.include_router(nic_routes.router(hv, agent.networks.spec, agent.net_dir,
                                         after_plug=ports.sync_ovs))
    app.include_router(port_routes.router(ports))
    # Networks (build, remove, status, dry run, leases): see corral.agent.network_routes.
    app.include_router(network_routes.router(agent.networks))

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # Live migration to another host's libvirtd, as a job: see corral.agent.migration_routes.
    # Before the domain routes: their POST /v1/domains/{name}/{action} would take "migrate".
    app.include_router(migration_routes.router(hv, jobs, settings.state_dir))
    # A stopped VM's root disk and UEFI variables, read and written whole (offline
    # migration): see corral.agent.vm_files.
    app.include_router(vm_files.router(storage, lambda vm: _domain_state(hv, vm)))
    # Domains, root disks, seeds and host facts: see corral.agent.domain_routes.
    app.include_router(domain_routes.router(hv, storage, agent.console_dir, agent.facts,
                                            after_start=ports.sync_ovs))
    # The guest agent (ping, exec) and the displays of running domains.
    app.include_router(guest_routes.router(hv))
    # The host as a whole: its memory (KSM, balloons).
    app.include_router(host_routes.router(hv, {
        "reboot": list(settings.reboot_command), "poweroff": list(settings.poweroff_command)}))

    # CPU, memory, disk and network of the last 10 minutes (the web UI's graphs): sampled
    # by a thread that corral.agent.__main__ starts with the reporter.
    app.state.stats = StatsSampler(hv.domain_stats)
    app.include_router(stats_routes.router(app.state.stats))

    @app.websocket("/v1/domains/{name}/console")
    async def console(ws: WebSocket, name: str) -> None:
        await ws.accept()
        await relay_console(ws, hv, name)

    @app.websocket("/v1/domains/{name}/vnc")
    async def vnc(ws: WebSocket, name: str) -> None:
        await relay_vnc(ws, hv, name)

    return app
