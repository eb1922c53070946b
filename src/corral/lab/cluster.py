"""``corral lab``: a cluster on this one machine: an engine and N lab hosts, each a
:class:`corral.lab.LabHost` (namespaces, its own libvirtd/virtlogd) whose agent joined the
engine through the real join path (``corral host token``, ``python -m corral.agent join``).

Layout (``ROOT``, default /var/lib/corral-lab)::

    lab.json            the state file (corral.lab.state): written before anything is made
    .corral-lab         marker: `lab down` removes ROOT only where it finds it
    engine/             the engine's data dir (never the `corral up` node's)
    hosts/<name>/       the lab host's root_dir; agent/ its agent's state dir, agent.log
    shared/             --storage shared: the directory every lab host sees (pool `shared`)
    lockspace/          --storage shared: the disk leases of every lab host's virtlockd
    ceph/               --storage rbd: the Ceph cluster (corral.lab.ceph; pool `rbd`), its
                        daemons in the engine's namespace
    tiny-cache/         the tiny guest's .debs, when `lab up` downloaded them (no --deb-cache)

What `lab up` makes in the engine, once the hosts joined: network ``default``, one VXLAN
segment over every lab host (10.212.0.0/24, isolated: guests reach each other and the DHCP/DNS
server, nothing beyond the lab; one host serves DHCP, so no address is handed out twice and a
VM keeps its address on any host), and image ``tiny`` (built on the first host; the others get
it copied when a VM needs it there). The lab hosts have no route to the package mirror: the
.debs of the tiny guest are downloaded here, in the machine's namespace (or taken from
``--deb-cache``), and put into the building host's cache.

The engine runs in a network namespace of its own, ``corral-<prefix>0``, linked to the
machine (the CLI reaches it there) and to the lab's router like a lab host, so the agents
reach it over the shared underlay (10.209.0.0/16) and it reaches their agents; nothing of
it listens outside the lab's addresses.

A lab host's libvirtd listens for its peers (live migration) with TLS only, with the
certificate its agent got at the join (corral.agent.migration_pki): it starts listening on
nothing, and is restarted once its agent is up and has laid the certificate out.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.agent.migration_pki import pki_dir
from corral.api import (
    NetworkCreate,
    NetworkMode,
    NetworkOverlay,
    Operation,
    OperationStatus,
    PoolCreate,
    PoolType,
)
from corral.api.fencing import FenceMethodSet
from corral.client import Client
from corral.errors import Conflict, CorralError, HostError, InvalidInput, NotFound, Unavailable
from corral.ha import corosync_conf
from corral.lab import _net, _procs, state
from corral.lab.ceph import CephCluster
from corral.lab.host import INDEX_MAX, LabHost
from corral.lab.netns import NetnsPlace
from corral.lab.state import EngineRecord, HostRecord, LabState

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/var/lib/corral-lab")
DEFAULT_PREFIX = "lab"
REMOTE = "lab"
CEPH_POOL = "rbd"
ENGINE_PORT = 8443
AGENT_PORT = 8444
MARKER = ".corral-lab"
# The lab's default network (inside the lab hosts' namespaces): not the node's 10.210.0.0/24
# nor its corral0, so nothing reads as the node's.
LAB_SUBNET = "10.212.0.0/24"
LAB_BRIDGE = "crlab0"
LAB_VNI = 212
NETWORK = "default"
IMAGE = "tiny"
JOIN_TIMEOUT_S = 90.0
CORRAL = [sys.executable, "-m", "corral.cli.main"]
AGENT = [sys.executable, "-m", "corral.agent"]
GUARD = [sys.executable, "-m", "corral.agent.guard"]
STORAGE = ("none", "shared", "rbd")
QUORUM_MIN_HOSTS = 3  # `lab up` runs corosync by default from this many hosts
FAULTS = ("power-off", "power-on", "power-cycle", "cut-network", "heal", "kill-agent",
          "kill-libvirtd")
ENGINE_ACTIONS = ("stop", "start")
ENGINE_STOP_S = 30.0  # SIGTERM, then SIGKILL: an engine that hangs is stopped all the same


@dataclass
class HostStatus:
    name: str
    address: str
    powered: bool
    network: str  # ok | cut
    engine_status: str  # as the engine sees it, or "-" when the engine does not answer
    libvirtd_pid: int | None
    agent_pid: int | None
    corosync_pid: int | None = None  # a lab with quorum (`lab up --quorum`)


@dataclass
class LabStatus:
    root: str
    prefix: str
    engine_url: str | None
    engine_pid: int | None
    storage: str
    hosts: list[HostStatus]


def default_root() -> Path:
    return Path(os.environ.get("CORRAL_LAB_ROOT") or DEFAULT_ROOT)


class Lab:
    """One lab, found by its root directory; every method re-reads the state file."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()).absolute()

    # -- state --------------------------------------------------------------------------

    def state(self) -> LabState:
        st = state.load(self.root)
        if st is None:
            raise NotFound(f"no lab at {self.root} (`corral lab up`)")
        return st

    def _host(self, st: LabState, name: str) -> tuple[HostRecord, LabHost]:
        rec = st.hosts.get(name)
        if rec is None:
            known = ", ".join(sorted(st.hosts)) or "none"
            raise NotFound(f"no lab host {name!r} (lab hosts: {known})", field="host")
        return rec, LabHost(rec.name, rec.index, Path(rec.root_dir))

    # -- the engine -----------------------------------------------------------------------

    def _engine_env(self, st: LabState) -> dict[str, str]:
        assert st.engine is not None
        env = {k: v for k, v in os.environ.items()
               if k not in ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_CA", "CORRAL_REMOTE")}
        return {**env, "CORRAL_DATA_DIR": st.engine.data_dir}

    def client(self, st: LabState | None = None) -> Client:
        st = st or self.state()
        if st.engine is None:
            raise Unavailable("the lab has no engine")
        return Client.from_config(Path(st.engine.data_dir))

    def _start_engine(self, st: LabState, heartbeat_timeout: float | None = None,
                      cpu_overcommit: float | None = None) -> None:
        index = _free_index(st.used_indexes())
        name = state.host_name(st.prefix, 0)
        base = f"10.209.{index}"  # LabHost's plan: .1 machine, .2 inside, .5/.6 router
        st.engine = EngineRecord(netns=f"corral-{name}", veth=f"crl-{name}", index=index,
                                 address=f"{base}.2", port=ENGINE_PORT,
                                 data_dir=str(self.root / "engine"))
        state.save(st)  # recorded before it exists
        subnet = ipaddress.IPv4Network(f"{base}.0/30")
        _net.check_free(st.engine.netns, st.engine.veth, subnet)
        _net.create(st.engine.netns, st.engine.veth, "lab0", subnet, f"{base}.1", f"{base}.2")
        _net.connect_router(st.engine.netns, name, subnet)
        data_dir = Path(st.engine.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = ["nsenter", f"--net=/run/netns/{st.engine.netns}", "--", *CORRAL, "up",
                "--data-dir", str(data_dir), "--listen", st.engine.address,
                "--port", str(st.engine.port), "--no-local-agent",
                "--subnet", LAB_SUBNET, "--bridge", LAB_BRIDGE, "--detach"]
        if heartbeat_timeout is not None:
            argv += ["--heartbeat-timeout", str(heartbeat_timeout)]
        if cpu_overcommit is not None:
            argv += ["--cpu-overcommit", str(cpu_overcommit)]
        st.engine.argv = argv
        self._run_engine(st)

    def _run_engine(self, st: LabState) -> None:
        """`corral up --detach` in the engine's namespace, as `lab up` first ran it; returns
        once its API answers."""
        assert st.engine is not None
        _run(st.engine.argv, timeout=180, what="starting the lab's engine")
        with contextlib.suppress(OSError, ValueError):
            st.engine.pid = int((Path(st.engine.data_dir) / "engine.pid").read_text().strip())
        state.save(st)

    def engine(self, action: str) -> str:
        """Stop (SIGTERM, as `corral down`: the hosts' agents and VMs keep running) or
        start the lab's engine again with the options `lab up` gave it; a line saying what
        was done."""
        if action not in ENGINE_ACTIONS:
            raise InvalidInput(f"engine action {action!r}: one of {', '.join(ENGINE_ACTIONS)}",
                               field="action")
        st = self.state()
        if st.engine is None or not st.engine.argv:
            raise Conflict("the lab has no engine `lab engine` can restart (made by an older "
                           "`lab up`)", field="action")
        pid = st.engine.pid if st.engine.pid and _procs.is_alive(st.engine.pid) else None
        if action == "start":
            if pid is not None:
                raise Conflict(f"the lab's engine runs (pid {pid})", field="action")
            self._run_engine(st)
            return f"engine started (pid {st.engine.pid})"
        if pid is None:
            raise Conflict("the lab's engine is not running (`corral lab engine start`)",
                           field="action")
        _stop_gracefully(pid, ENGINE_STOP_S)
        st.engine.pid = None
        state.save(st)
        return f"engine {pid} stopped (agents and VMs keep running)"

    def _token(self, st: LabState) -> str:
        out = _run([*CORRAL, "host", "token", "--ttl", "10m"], env=self._engine_env(st),
                   timeout=60, what="making a join token")
        token = "".join(out.split())  # the token alone on stdout (a narrow console folds it)
        if not token:
            raise HostError("`corral host token` printed no token")
        return token

    # -- hosts ----------------------------------------------------------------------------

    def _start_host(self, st: LabState, name: str | None) -> HostRecord:
        number = st.next_number() if name is None else state.number_of(st.prefix, name)
        if number is None or number < 1:
            raise InvalidInput(f"lab host name {name!r} must be {st.prefix}<1-99> "
                               f"(the lab's prefix and a number)", field="name")
        name = state.host_name(st.prefix, number)
        if name in st.hosts:
            raise Conflict(f"lab host {name!r} exists", field="name")
        index = _free_index(st.used_indexes())
        root_dir = self.root / "hosts" / name
        # Its libvirtd listens with TLS only, once its agent laid its certificate out there
        host = LabHost(name, index, root_dir, tls_pki=pki_dir(root_dir / "agent"),
                       lockspace=self.root / "lockspace" if st.storage == "shared" else None,
                       quorum=st.quorum)
        rec = HostRecord(name=name, number=number, index=index, root_dir=str(root_dir),
                         address=host.address)
        st.hosts[name] = rec
        state.save(st)  # recorded before it exists
        root_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(root_dir, 0o711)  # QEMU (libvirt-qemu) reaches the disks below
        host.start()
        assert st.engine is not None
        token = self._token(st)
        rec.agent_pid = self._spawn_agent(host, rec, [
            "join", f"https://{st.engine.address}:{st.engine.port}", "--token", token,
            "--name", name])
        state.save(st)
        return rec

    def _spawn_agent(self, host: LabHost, rec: HostRecord, args: list[str]) -> int:
        """Start the agent inside the lab host, in the background (a session of its own, so
        the CLI that started it may exit), under its lease guard (corral.agent.guard, which
        restarts it and self-fences the host); the guard's pid."""
        root_dir = Path(rec.root_dir)
        agent_dir = root_dir / "agent"
        agent_dir.mkdir(exist_ok=True)
        os.chmod(agent_dir, 0o711)
        common = ["--state-dir", str(agent_dir), "--listen", rec.address,
                  "--port", str(AGENT_PORT), *self._power_commands(rec.name),
                  *_lock_daemon(host), *_quorum_option(host)]
        with open(root_dir / "agent.log", "ab") as logf:
            proc = host.popen([*GUARD, *_guard_options(host, [*AGENT, "run", *common]), "--",
                               *AGENT, *args, *common],
                              stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                              start_new_session=True)
        return proc.pid

    def _power_commands(self, name: str) -> list[str]:
        """`corral host reboot|shutdown` of a lab host: the lab's power-cycle or power-off
        of it (run by its agent, inside the host: :meth:`leave_host` first)."""
        corral = Path(sys.executable).with_name("corral")
        lab = [str(corral) if corral.exists() else "corral", "lab", "fault", name]
        tail = ["--root", str(self.root), "--from-host"]
        return ["--reboot-command", shlex.join([*lab, "power-cycle", "--no-wait", *tail]),
                "--poweroff-command", shlex.join([*lab, "power-off", *tail])]

    def leave_host(self, argv: list[str]) -> None:
        """Run ``argv`` again in the lab engine's namespaces, in place of this process: a
        command a lab host's agent started runs inside that host, where a power-off of it
        would kill it too (the engine's are the machine's mounts, and no lab host's
        network)."""
        st = self.state()
        pid = st.engine.pid if st.engine is not None else None
        if not pid or not _procs.is_alive(pid):
            raise Conflict("the lab's engine is not running: nothing outside the lab host to "
                           "run from", field="from_host")
        os.execvp("nsenter", ["nsenter", f"--target={pid}", "--mount", "--net", "--uts", "--",
                              *argv])

    def _wait_up(self, st: LabState, names: list[str], timeout: float = JOIN_TIMEOUT_S) -> None:
        """Until the engine sees every host of ``names`` `up`, its facts read (the scheduler
        needs its CPUs and memory); bounded."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            with contextlib.suppress(CorralError), self.client(st) as c:
                seen = {h.name: h.status if h.cpus else "up, facts not read yet"
                        for h in c.list_hosts()}
            if all(seen.get(n) == "up" for n in names):
                return
            for n in names:  # an agent that died will never join: say so at once
                rec = st.hosts[n]
                if rec.agent_pid is not None and not _procs.is_alive(rec.agent_pid):
                    raise HostError(f"the agent of lab host {n} exited; see "
                                    f"{Path(rec.root_dir) / 'agent.log'}")
            if time.monotonic() > deadline:
                raise Unavailable(f"lab hosts not up after {timeout:g} s: "
                                  + ", ".join(f"{n}={seen.get(n, 'absent')}" for n in names))
            time.sleep(0.5)

    # -- up, add-host, down ---------------------------------------------------------------

    def up(self, hosts: int, storage: str = "none", prefix: str = DEFAULT_PREFIX,
           remote: bool = True, heartbeat_timeout: float | None = None,
           cpu_overcommit: float | None = None,
           image: bool = True, deb_cache: Path | None = None, fence: bool = True,
           quorum: bool | None = None) -> LabState:
        """Build the lab; on any failure everything made so far is removed again.
        ``heartbeat_timeout``, ``cpu_overcommit``: the engine's `corral up
        --heartbeat-timeout`, `--cpu-overcommit` (None: its default). ``image``: build
        image ``tiny`` (its .debs from ``deb_cache``, a directory
        holding ``debs/`` as ``corral.images.tiny.fetch_packages`` fills it, else downloaded
        into ROOT/tiny-cache). ``fence``: give every host the fence method
        fence_corral_lab (HA fences a lost host through it). ``quorum``: every host runs
        corosync (votequorum) with all lab hosts in its nodelist; None: with 3 hosts or more
        (two would need a tie-breaker: both halves of a partition stay quorate)."""
        if not 1 <= hosts <= state.MAX_HOSTS:
            raise InvalidInput(f"--hosts must be 1 to {state.MAX_HOSTS}", field="hosts")
        if storage not in STORAGE:
            raise InvalidInput(f"--storage {storage!r}: one of {', '.join(STORAGE)}",
                               field="storage")
        state.check_prefix(prefix)
        with_quorum = _want_quorum(hosts, quorum)
        if os.geteuid() != 0:
            raise Unavailable("corral lab needs root (network namespaces, libvirtd)")
        if state.load(self.root) is not None:
            raise Conflict(f"a lab is up at {self.root} (`corral lab status`, "
                           "`corral lab down`)")
        leftovers = _existing_names(prefix)
        if leftovers:
            raise Conflict(f"namespaces or links of a lab {prefix!r} exist ({', '.join(leftovers)}): "
                           f"`corral lab down --prefix {prefix}` removes them", field="prefix")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        (self.root / MARKER).write_text("corral lab root: `corral lab down` removes it\n")
        st = LabState(root=str(self.root), prefix=prefix, storage=storage,
                      quorum=with_quorum)
        state.save(st)
        try:
            self._start_engine(st, heartbeat_timeout, cpu_overcommit)
            if storage == "rbd":
                self._start_ceph(st)
            names = [self._start_host(st, None).name for _ in range(hosts)]
            self._wait_up(st, names)
            if st.quorum:
                self._write_quorum(st)
            self._listen_tls(st, names)
            if fence:
                self._fence_hosts(st, names)
            if storage == "shared":
                self._shared_pool(st)
            elif storage == "rbd":
                self._rbd_pool(st)
            self._default_network(st)
            if image:
                self._tiny_image(st, min(names), deb_cache)
            if remote:
                self._add_remote(st)
        except BaseException:
            log.warning("lab up failed: removing what it made")
            self.down()
            raise
        return st

    def add_host(self, name: str | None = None) -> HostRecord:
        st = self.state()
        rec = self._start_host(st, name)  # if it fails, its record stays for `lab down`
        if st.quorum:
            self._write_quorum(st)
        self._wait_up(st, [rec.name])
        self._listen_tls(st, [rec.name])
        with self.client(st) as c:  # fenced as the others, if they are
            others = [n for n in st.hosts if n != rec.name]
            if others and c.fence_methods(min(others)):
                self._fence_hosts(st, [rec.name])
        return rec

    def remove_host(self, name: str) -> str:
        """`corral host remove` it in the engine (refused while VMs are defined on it), then
        stop the lab host and forget it; with quorum, the others' corosync.conf lose it."""
        st = self.state()
        _, host = self._host(st, name)
        with contextlib.suppress(NotFound):  # the engine forgot it already: go on
            self._succeed(st, lambda c: c.remove_host(name), 120,
                          f"host {name} was not removed from the engine")
        host.stop()
        del st.hosts[name]
        state.save(st)
        if st.quorum and st.hosts:
            self._write_quorum(st)
        return f"lab host {name} removed"

    def _write_quorum(self, st: LabState) -> None:
        """Every lab host's corosync.conf names all the lab's hosts (nodeid: the host's
        number); a running corosync reads it again (`corosync-cfgtool -R`), a powered host's
        that does not run is started. After a host is added or removed."""
        recs = sorted(st.hosts.values(), key=lambda r: r.number)
        nodes = [corosync_conf.Node(r.number, r.name, r.address) for r in recs]
        hosts = []
        for rec in recs:
            _, host = self._host(st, rec.name)
            if not host.attach():
                raise HostError(f"lab host {rec.name} has no namespaces")
            host.write_corosync_conf(corosync_conf.render(
                f"corral-{st.prefix}", nodes, str(host.corosync_log()), crypto=False,
                state_dir=str(host.corosync_state_dir())))
            hosts.append((rec, host))
        for _rec, host in hosts:  # the running ones first: they then expect the new ones
            host.reload_quorum()
        for rec, host in hosts:
            if rec.powered:
                host.start_quorum()

    def _fence_hosts(self, st: LabState, names: list[str]) -> None:
        """Each host's fence method: fence_corral_lab, the lab's power-off and power-on of
        it (run by the engine, in its namespaces; corral.lab.fence_agent)."""
        with self.client(st) as c:
            for name in names:
                c.set_fence_method(name, FenceMethodSet(
                    agent="fence_corral_lab", options={"root": str(self.root), "plug": name},
                    position=1))

    def _listen_tls(self, st: LabState, names: list[str]) -> None:
        """Restart the libvirtds of hosts whose agents joined (and so wrote their
        certificates): they listen for their peers with TLS from now on (migration)."""
        for name in names:
            _, host = self._host(st, name)
            if not host.attach():
                raise HostError(f"lab host {name} has no namespaces")
            if not host.listens_with_tls():
                raise HostError(f"the agent of lab host {name} wrote no certificates for "
                                f"libvirtd; see {Path(st.hosts[name].root_dir) / 'agent.log'}")
            host.restart_libvirtd()

    def _shared_pool(self, st: LabState) -> None:
        shared = self.root / "shared"
        shared.mkdir(exist_ok=True)
        os.chmod(shared, 0o755)
        st.shared_dir = str(shared)
        state.save(st)
        self._create_pool(st, PoolCreate(name="shared", type=PoolType.SHARED, path=str(shared)))

    def _default_network(self, st: LabState) -> None:
        """Network `default` across the lab hosts: a VXLAN overlay, isolated (see above)."""
        req = NetworkCreate(name=NETWORK, mode=NetworkMode.ISOLATED, subnet=LAB_SUBNET,
                            bridge=LAB_BRIDGE, overlay=NetworkOverlay.VXLAN, vni=LAB_VNI)
        self._succeed(st, lambda c: c.create_network(req), 120, f"network {NETWORK} was not made")

    def _tiny_image(self, st: LabState, builder: str, deb_cache: Path | None) -> None:
        """Image `tiny`, built by the engine on ``builder`` (the first host by name, where a
        build goes) from .debs fetched here: the lab hosts have no route to the mirror."""
        from corral.images.tiny import fetch_packages
        from corral.images.tiny_ssh import fetch_ssh_packages

        cache = deb_cache or self.root / "tiny-cache"
        fetch_packages(cache, lambda _pct, _msg: None)  # no download when cache has them
        fetch_ssh_packages(cache, lambda _pct, _msg: None)
        target = Path(st.hosts[builder].root_dir) / "agent" / "storage" / "build" / "cache"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(cache / "debs", target / "debs", dirs_exist_ok=True)
        self._succeed(st, lambda c: c.build_tiny(IMAGE), 900, f"image {IMAGE} was not built")

    def _start_ceph(self, st: LabState) -> None:
        """The one-machine Ceph cluster (mon, mgr, 3 OSDs), in the engine's namespace, so
        every lab host reaches it over the router; pool `rbd` made in it."""
        assert st.engine is not None
        st.ceph_dir = str(self.root / "ceph")
        state.save(st)  # recorded first; its daemons go with the engine's namespace
        ceph = CephCluster(Path(st.ceph_dir), NetnsPlace(st.engine.netns, st.engine.address))
        ceph.start()  # cleans up after itself if it fails
        ceph.create_pool(CEPH_POOL)

    def _rbd_pool(self, st: LabState) -> None:
        assert st.ceph_dir is not None
        self._create_pool(st, PoolCreate(name="rbd", type=PoolType.RBD, ceph_pool=CEPH_POOL,
                                         ceph_conf=str(Path(st.ceph_dir) / "ceph.conf")))

    def _create_pool(self, st: LabState, req: PoolCreate) -> None:
        self._succeed(st, lambda c: c.create_pool(req), 120, f"pool {req.name} was not made")

    def _succeed(self, st: LabState, submit: Callable[[Client], Operation], timeout: float,
                 failed: str) -> None:
        """Submit an operation to the lab's engine and wait for it; HostError unless it
        succeeded."""
        with self.client(st) as c:
            done = c.wait(submit(c).id, timeout=timeout)
        if done.status != OperationStatus.SUCCESS:
            raise HostError(f"{failed}: {done.error or done.message}")

    def _add_remote(self, st: LabState) -> None:
        from corral.client import remotes

        assert st.engine is not None
        data_dir = Path(st.engine.data_dir)
        cfg = json.loads((data_dir / "client.json").read_text())
        ca_pem = Path(cfg["ca"]).read_text()
        st.previous_remote = remotes.current()
        remotes.add_remote(REMOTE, cfg["url"], cfg["token"], ca_pem, switch=True, replace=True)
        st.remote = REMOTE
        state.save(st)

    def down(self, prefix: str | None = None) -> list[str]:
        """Remove every trace of the lab: what the state file records and whatever is named
        like the lab's (after a crash, a kill -9). Never raises for what is already gone;
        returns what could not be removed (empty when all went)."""
        try:
            st = state.load(self.root)
        except InvalidInput:
            log.warning("unreadable %s: sweeping by name", state.state_path(self.root))
            st = None
        pfx = prefix or (st.prefix if st else DEFAULT_PREFIX)
        if st is not None and st.engine is not None and st.engine.pid is not None:
            _kill_if_corral(st.engine.pid)
        netns, links, rlinks = _list_names()
        targets = state.sweep_targets(st, pfx, netns, links, rlinks)
        for ns in targets.netns:
            name = ns.removeprefix("corral-")
            rec = st.hosts.get(name) if st else None
            root_dir = Path(rec.root_dir) if rec else self.root / "hosts" / name
            index = rec.index if rec else 1  # stop() does not use it
            LabHost(name, index, root_dir).stop()
        if st is not None and st.remote:
            with contextlib.suppress(CorralError):
                from corral.client import remotes

                remotes.remove_remote(st.remote, switch_to=st.previous_remote)
        if (self.root / MARKER).exists():
            shutil.rmtree(self.root, ignore_errors=True)
        elif st is not None:
            state.remove(self.root)
        return _existing_names(pfx)

    # -- status ---------------------------------------------------------------------------

    def status(self) -> LabStatus:
        st = self.state()
        seen: dict[str, str] = {}
        url = None
        if st.engine is not None:
            url = f"https://{st.engine.address}:{st.engine.port}"
            with contextlib.suppress(CorralError, OSError, ValueError), self.client(st) as c:
                seen = {h.name: h.status for h in c.list_hosts()}
        rows = []
        for rec in sorted(st.hosts.values(), key=lambda r: r.number):
            host = LabHost(rec.name, rec.index, Path(rec.root_dir))
            guard = _agent_pid(rec)  # the agent is its guard's child
            agent = _child_of(guard) if guard is not None else None
            rows.append(HostStatus(name=rec.name, address=rec.address, powered=rec.powered,
                                   network="cut" if rec.cut else "ok",
                                   engine_status=seen.get(rec.name, "-"),
                                   libvirtd_pid=host.daemon_pid("libvirtd"), agent_pid=agent,
                                   corosync_pid=host.daemon_pid("corosync")))
        engine_pid = None
        if st.engine is not None and st.engine.pid and _procs.is_alive(st.engine.pid):
            engine_pid = st.engine.pid
        return LabStatus(root=st.root, prefix=st.prefix, engine_url=url, engine_pid=engine_pid,
                         storage=st.storage, hosts=rows)

    # -- faults ---------------------------------------------------------------------------

    def fault(self, name: str, action: str, wait: bool = True) -> str:
        """Inject a fault into lab host ``name``; a line saying what was done."""
        if action not in FAULTS:
            raise InvalidInput(f"fault {action!r}: one of {', '.join(FAULTS)}", field="fault")
        st = self.state()
        rec, host = self._host(st, name)
        if action == "power-off":
            if not host.processes():
                raise Conflict(f"{name} is already off (`corral lab fault {name} power-on`)",
                               field="host")
            killed = host.power_off()
            rec.powered, rec.agent_pid = False, None
            state.save(st)
            return f"{name}: powered off ({len(killed)} processes killed, disks kept)"
        if action == "power-on":
            return self._power_on(st, rec, host, wait)
        if action == "power-cycle":  # a reboot: off as a power loss, then on again
            killed = host.power_off() if host.processes() else []
            rec.powered, rec.agent_pid = False, None
            state.save(st)
            return (f"{name}: power-cycled ({len(killed)} processes killed); "
                    + self._power_on(st, rec, host, wait))
        if action in ("cut-network", "heal"):
            cut = action == "cut-network"
            _set_cut(host.netns, cut)
            rec.cut = cut
            state.save(st)
            return f"{name}: network {'cut (all traffic dropped)' if cut else 'healed'}"
        if action == "kill-agent":  # the guard's child: the guard restarts it
            guard = _agent_pid(rec)
            pid = _child_of(guard) if guard is not None else None
            if pid is None:
                raise Conflict(f"the agent of {name} is not running", field="host")
            _procs.kill_and_wait([pid])
            return f"{name}: agent {pid} killed (its guard {guard} starts it again)"
        pid = host.daemon_pid("libvirtd")
        if pid is None:
            raise Conflict(f"libvirtd of {name} is not running", field="host")
        _procs.kill_and_wait([pid])
        return f"{name}: libvirtd {pid} killed"

    def _power_on(self, st: LabState, rec: HostRecord, host: LabHost, wait: bool) -> str:
        """Start what is not running: libvirtd (virtlogd), then the agent, which rejoins
        with the identity it saved at its join (no token)."""
        started = []
        if host.daemon_pid("libvirtd") is None:
            host.power_on()
            started.append("libvirtd")
        if _agent_pid(rec) is None:
            if not host.attach():
                raise Conflict(f"lab host {rec.name} has no namespaces", field="host")
            rec.agent_pid = self._spawn_agent(host, rec, ["run"])
            started.append("agent")
        if host.has_quorum() and host.daemon_pid("corosync") is None and host.attach():
            host.start_quorum()  # host.power_on starts it too; here: libvirtd was running
            started.append("corosync")
        if not started:
            raise Conflict(f"{rec.name} is already on (libvirtd and agent run)", field="host")
        rec.powered = True
        state.save(st)
        if wait:
            self._wait_up(st, [rec.name])
        return f"{rec.name}: powered on ({', '.join(started)} started)"


# -- helpers ------------------------------------------------------------------------------

def _guard_options(host: LabHost, run_argv: list[str]) -> list[str]:
    """A restarted agent runs (its first start may have joined); with a quorum provider the
    guard leaves the membership when the lease lapsed with the agent dead, and rejoins."""
    options = ["--restart-command", shlex.join(run_argv)]
    join = host.quorum_start_argv()
    if join is not None:
        options += ["--leave-command", "corosync-cfgtool -H", "--join-command", shlex.join(join)]
    return options


def _want_quorum(hosts: int, quorum: bool | None) -> bool:
    """`lab up --quorum/--no-quorum`; by default with 3 hosts or more where corosync is
    installed (a machine without it gets a lab without quorum, as before)."""
    installed = shutil.which("corosync") is not None
    if quorum and not installed:
        raise Unavailable("--quorum needs corosync on this machine (apt-get install "
                          "corosync; scripts/install-deps.sh installs it)")
    return installed and hosts >= QUORUM_MIN_HOSTS if quorum is None else quorum


def _quorum_option(host: LabHost) -> list[str]:
    """The agent reads the membership from corosync where the lab runs it (and reports a
    corosync that is not running as out of the membership); none elsewhere."""
    return ["--quorum", "corosync" if host.has_quorum() else "none"]


def _lock_daemon(host: LabHost) -> list[str]:
    """The agent watches virtlockd where the lab host uses disk leases (docs/ha.md)."""
    pidfile = host.lock_daemon_pidfile()
    return [] if pidfile is None else ["--lock-daemon-pidfile", str(pidfile)]


def _run(argv: list[str], *, timeout: float, what: str,
         env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{what}: no answer in {timeout:g} s", argv=argv) from exc
    if proc.returncode != 0:
        raise HostError(f"{what} failed (exit {proc.returncode}): "
                        f"{(proc.stderr or proc.stdout).strip()[-2000:]}", argv=argv,
                        returncode=proc.returncode)
    return proc.stdout


def _free_index(used: set[int]) -> int:
    """The first lab index (counting from 1) that no lab host, route or namespace uses."""
    start = int(os.environ.get("CORRAL_LAB_INDEX_BASE", "1"))
    for index in range(start, INDEX_MAX + 1):
        if index in used:
            continue
        subnet = ipaddress.IPv4Network(f"10.209.{index}.0/30")
        try:
            _net.check_free("corral-lab-index-probe", "crl-probe-none", subnet)
        except Conflict:
            continue
        return index
    raise Conflict("every lab index is in use (`ip -o -4 addr | grep 10.209.`)")


def _list_names() -> tuple[list[str], list[str], list[str]]:
    """Namespaces, links of the machine and links of the router namespace, as named now."""
    ns_out = _net.ip("netns", "list", check=False).stdout
    netns = [line.split()[0] for line in ns_out.splitlines() if line.strip()]
    links = [link.get("ifname", "")
             for link in json.loads(_net.ip("-j", "link", "show", check=False).stdout or "[]")]
    rlinks: list[str] = []
    if _net.ROUTER_NETNS in netns:
        out = _net.ip("-j", "-n", _net.ROUTER_NETNS, "link", "show", check=False).stdout
        rlinks = [link.get("ifname", "") for link in json.loads(out or "[]")]
    return netns, links, rlinks


def _existing_names(prefix: str) -> list[str]:
    """Namespaces and links of the lab ``prefix`` that exist now (what `down` must remove)."""
    netns, links, rlinks = _list_names()
    found = state.sweep_targets(None, prefix, netns, links, rlinks)
    existing = set(netns) | set(links) | set(rlinks)
    return [n for n in [*found.netns, *found.veths, *found.router_links] if n in existing]


def _kill_if_corral(pid: int) -> None:
    """SIGKILL ``pid`` if it still is a corral process (not a pid reused since)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"corral" in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _procs.kill_and_wait([pid], timeout=5)


def _stop_gracefully(pid: int, timeout: float) -> None:
    """SIGTERM ``pid`` and wait until it is gone; SIGKILL after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _procs.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _procs.kill_and_wait([pid]):
        raise HostError(f"process {pid} survived SIGKILL")


def _child_of(pid: int) -> int | None:
    """The living child of ``pid`` (the agent of a guard), None while it has none."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) > 1 and fields[1] == str(pid) and fields[0] != "Z":
            return int(entry)
    return None


def _agent_pid(rec: HostRecord) -> int | None:
    """The lab host's agent service: its guard (corral.agent.guard), the agent its child."""
    pid = rec.agent_pid
    if pid is None or not _procs.is_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"corral.agent" in cmdline else None


def _cut_rules() -> str:
    # Everything but loopback, both ways; priority before any other filter of the host.
    return (f"table inet {state.CUT_TABLE} {{\n"
            "  chain input { type filter hook input priority -400; policy drop;"
            " iifname \"lo\" accept; }\n"
            "  chain output { type filter hook output priority -400; policy drop;"
            " oifname \"lo\" accept; }\n"
            "  chain forward { type filter hook forward priority -400; policy drop; }\n"
            "}\n")


def _set_cut(netns: str, cut: bool) -> None:
    """Add (cut) or delete (heal) the lab's nftables table in ``netns``; idempotent."""
    base = ["nsenter", f"--net=/run/netns/{netns}", "--", "nft"]
    # Deleting first makes both idempotent (a table "add" of an existing one would merge).
    subprocess.run([*base, "delete", "table", "inet", state.CUT_TABLE], capture_output=True,
                   text=True, timeout=30, check=False)
    if cut:
        proc = subprocess.run([*base, "-f", "-"], input=_cut_rules(), capture_output=True,
                              text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise HostError(f"nft in {netns} failed: {proc.stderr.strip()}")
