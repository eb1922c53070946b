"""Open vSwitch for corral networks: its two daemons, bridges and ports.

The agent starts ``ovsdb-server`` and ``ovs-vswitchd`` itself when none runs (no systemd
here); both daemonize, so they outlive the agent, and an agent that comes back finds them
through their pid files. Where they keep things follows Open vSwitch's own variables
``OVS_RUNDIR`` (sockets, pid files), ``OVS_DBDIR`` (``conf.db``) and ``OVS_LOGDIR``; the
defaults are Debian's (/var/run/openvswitch, /etc/openvswitch, /var/log/openvswitch),
which is also where libvirt's own ``ovs-vsctl`` looks when it plugs a guest port into an
OVS bridge (``<virtualport type='openvswitch'/>``). Tests give each namespace private paths;
a lab host binds private directories over the default ones.

Datapath: the kernel's (``system``) when the openvswitch module is loaded, else the
userspace one (``netdev``: ports are read and written through AF_PACKET/tap, so it works in
any network namespace without a kernel module). ``CORRAL_OVS_DATAPATH`` overrides.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from corral.agent.network import _cmd
from corral.errors import Conflict, HostError

log = logging.getLogger(__name__)

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
_lock = threading.Lock()


@dataclass(frozen=True)
class OvsPaths:
    rundir: Path
    dbdir: Path
    logdir: Path

    @classmethod
    def from_env(cls) -> OvsPaths:
        env = os.environ
        return cls(
            Path(env.get("OVS_RUNDIR") or "/var/run/openvswitch"),
            Path(env.get("OVS_DBDIR") or "/etc/openvswitch"),
            Path(env.get("OVS_LOGDIR") or "/var/log/openvswitch"),
        )

    @property
    def sock(self) -> Path:
        return self.rundir / "db.sock"

    @property
    def conf_db(self) -> Path:
        return self.dbdir / "conf.db"

    def pidfile(self, daemon: str) -> Path:
        return self.rundir / f"{daemon}.pid"

    def env(self) -> dict[str, str]:
        return {"OVS_RUNDIR": str(self.rundir), "OVS_DBDIR": str(self.dbdir),
                "OVS_LOGDIR": str(self.logdir)}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _netns(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def daemon_pid(paths: OvsPaths, daemon: str) -> int | None:
    """The pid of a live ``daemon`` named in its pid file, else None.

    ``Conflict`` when it runs in another network namespace: its bridges and ports would not
    be ours (give this namespace its own OVS_RUNDIR).
    """
    try:
        pid = int(paths.pidfile(daemon).read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    if comm != daemon[:15] or not _alive(pid):
        return None
    if _netns(pid) != _netns("self"):
        raise Conflict(
            f"the Open vSwitch {daemon} of {paths.rundir} (pid {pid}) runs in another network "
            "namespace; give this one its own OVS_RUNDIR/OVS_DBDIR",
        )
    return pid


def running(paths: OvsPaths) -> bool:
    return all(daemon_pid(paths, d) is not None for d in DAEMONS)


def ensure_daemons(paths: OvsPaths | None = None) -> OvsPaths:
    """Start ``ovsdb-server`` and ``ovs-vswitchd`` unless they run; create the database."""
    paths = paths or OvsPaths.from_env()
    with _lock:
        for tool in ("ovs-vsctl", "ovsdb-tool", *DAEMONS):
            _cmd.which(tool)
        env = paths.env()
        if daemon_pid(paths, "ovsdb-server") is None:
            for d in (paths.rundir, paths.dbdir, paths.logdir):
                d.mkdir(parents=True, exist_ok=True, mode=0o755)
            if not paths.conf_db.exists():
                _cmd.run(["ovsdb-tool", "create", str(paths.conf_db), str(SCHEMA)], env=env)
            elif _cmd.run(["ovsdb-tool", "needs-conversion", str(paths.conf_db), str(SCHEMA)],
                          env=env).stdout.strip() == "yes":
                _cmd.run(["ovsdb-tool", "convert", str(paths.conf_db), str(SCHEMA)], env=env)
            _cmd.run(["ovsdb-server", str(paths.conf_db), f"--remote=punix:{paths.sock}",
                      "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                      f"--pidfile={paths.pidfile('ovsdb-server')}", "--detach",
                      f"--log-file={paths.logdir / 'ovsdb-server.log'}",
                      f"--unixctl={paths.rundir / 'ovsdb-server.ctl'}"], env=env)
            log.info("started ovsdb-server (%s)", paths.sock)
        _cmd.run(["ovs-vsctl", f"--db=unix:{paths.sock}", "--timeout=15", "--no-wait", "init"],
                 env=env)
        if daemon_pid(paths, "ovs-vswitchd") is None:
            if datapath_type() == "netdev":
                # Ports are read and written through packet sockets: without the virtio-net
                # header (what this option turns on), packets that a veth or a guest's tap
                # hands over with checksum/segmentation offloads pending leave OVS with bad
                # checksums, and TCP through the bridge stalls (read at vswitchd start).
                _cmd.run(["ovs-vsctl", f"--db=unix:{paths.sock}", "--timeout=15", "--no-wait",
                          "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true"],
                         env=env)
            _cmd.run(["ovs-vswitchd", f"unix:{paths.sock}",
                      f"--pidfile={paths.pidfile('ovs-vswitchd')}", "--detach",
                      f"--log-file={paths.logdir / 'ovs-vswitchd.log'}",
                      f"--unixctl={paths.rundir / 'ovs-vswitchd.ctl'}"], env=env, timeout=60)
            log.info("started ovs-vswitchd (%s)", paths.sock)
    return paths


def vsctl(paths: OvsPaths, *args: str, check: bool = True) -> str:
    proc = _cmd.run(["ovs-vsctl", f"--db=unix:{paths.sock}", "--timeout=15", *args],
                    env=paths.env(), check=check)
    return proc.stdout.strip()


def datapath_type() -> str:
    forced = os.environ.get("CORRAL_OVS_DATAPATH")
    if forced in ("system", "netdev"):
        return forced
    return "system" if Path("/sys/module/openvswitch").exists() else "netdev"


def bridge_exists(paths: OvsPaths, name: str) -> bool:
    proc = _cmd.run(["ovs-vsctl", f"--db=unix:{paths.sock}", "--timeout=15", "br-exists", name],
                    env=paths.env(), check=False)
    if proc.returncode not in (0, 2):
        raise HostError(f"`ovs-vsctl br-exists {name}` failed: {proc.stderr.strip()}")
    return proc.returncode == 0


def ensure_bridge(paths: OvsPaths, name: str, mac: str | None) -> bool:
    """Create (if missing) an OVS bridge; True when it was created now."""
    from corral.agent.network import bridge as linux

    created = not bridge_exists(paths, name)
    if created and linux.link(name) is not None:
        found = linux.kind(linux.link(name)) or "physical or unknown"
        raise Conflict(f"interface {name!r} exists and is not an Open vSwitch bridge (it is "
                       f"{found}); choose another bridge name", field="bridge")
    args = ["--may-exist", "add-br", name, "--", "set", "bridge", name,
            f"datapath_type={datapath_type()}"]
    if mac:
        args.append(f'other-config:hwaddr="{mac}"')
    vsctl(paths, *args)
    if created:
        log.info("created OVS bridge %s (datapath %s)", name, datapath_type())
    return created


def list_ports(paths: OvsPaths, bridge: str) -> list[str]:
    return vsctl(paths, "list-ports", bridge).split()


def port_bridge(paths: OvsPaths, port: str) -> str | None:
    """The bridge ``port`` is on, or None."""
    proc = _cmd.run(["ovs-vsctl", f"--db=unix:{paths.sock}", "--timeout=15", "port-to-br", port],
                    env=paths.env(), check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def ensure_port(paths: OvsPaths, bridge: str, port: str, *, tag: int | None,
                internal: bool = False, mac: str | None = None, mtu: int | None = None) -> bool:
    """Add ``port`` to ``bridge`` (an internal port, or an existing Linux device), with
    exactly the VLAN ``tag`` (None: untagged trunk). True when it was added now."""
    on = port_bridge(paths, port)
    if on is not None and on != bridge:
        raise Conflict(f"port {port} is on Open vSwitch bridge {on}, not {bridge}",
                       field="bridge")
    args = ["--may-exist", "add-port", bridge, port, "--"]
    args += ["set", "port", port, f"tag={tag}"] if tag is not None else ["clear", "port", port, "tag"]
    settings = []
    if internal:
        settings.append("type=internal")
        if mac:
            settings.append(f'mac="{mac}"')
    if mtu:
        settings.append(f"mtu_request={mtu}")
    if settings:
        args += ["--", "set", "interface", port, *settings]
    vsctl(paths, *args)
    return on is None


def delete_port(paths: OvsPaths, port: str) -> bool:
    if port_bridge(paths, port) is None:
        return False
    vsctl(paths, "--if-exists", "del-port", port)
    return True


def delete_bridge(paths: OvsPaths, name: str) -> bool:
    if not bridge_exists(paths, name):
        return False
    vsctl(paths, "--if-exists", "del-br", name)
    log.info("deleted OVS bridge %s", name)
    return True


def port_tag(paths: OvsPaths, port: str) -> int | None:
    value = vsctl(paths, "get", "port", port, "tag")
    return int(value) if value.isdigit() else None
