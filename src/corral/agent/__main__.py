"""`python -m corral.agent join|run`: the agent process of a host (`corral up` starts one).

`join URL --token T` joins a cluster once (corral.agent.join) and serves; `run` serves with
the identity kept at join. The agent serves HTTPS with mutual TLS only.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import logging
import os
import shlex
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from corral.agent import children, migration_pki
from corral.agent.app import AgentSettings, create_app
from corral.agent.corosync_files import CorosyncKeeper
from corral.agent.lock_daemon import LockDaemonWatch
from corral.agent.quorum import QuorumReader
from corral.agent.reporter import Reporter
from corral.errors import Conflict, CorralError, InvalidInput
from corral.host_identity import Identity
from corral.node.daemons import ensure_libvirtd
from corral.safeurls import parse_cidrs

# mallopt(3) parameters of glibc
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_TUNING = ((M_ARENA_MAX, 2, "MALLOC_ARENA_MAX"),
                 (M_MMAP_THRESHOLD, 256 << 10, "MALLOC_MMAP_THRESHOLD_"))


def tune_malloc() -> None:
    """Tune glibc's malloc for a mostly idle, threaded server; before any thread starts.

    - At most 2 arenas: otherwise each worker thread of the routes gets an arena of its own,
      and what it frees stays resident there.
    - A fixed mmap threshold: glibc raises it after each large free, up to 32 MiB, so that
      large buffers (a kernel package unpacked by the tiny image build, a chunk of a
      download) then come from the heap and keep it grown; fixed, they are mmapped and go
      back to the system when freed.

    Measured on an agent that built the tiny image and served 3200 requests from 20 clients:
    79.3 -> 74.7 MiB RSS. A value set in the environment (``MALLOC_ARENA_MAX``,
    ``MALLOC_MMAP_THRESHOLD_``) wins; without glibc (musl) nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for param, value, env in MALLOC_TUNING:
        if env not in os.environ:
            mallopt(param, value)


class _Server(uvicorn.Server):
    """Stops the jobs at the first SIGTERM/SIGINT, before uvicorn drains its connections
    (a job's long poll holds one up to a minute): a new agent started meanwhile must not find
    an old qemu-img still writing the ``.part`` it is about to write."""

    def __init__(self, config: uvicorn.Config, stop: Callable[[], None],
                 started: Callable[[], None]) -> None:
        super().__init__(config)
        self._stop, self._started = stop, started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # listening: the engine, told of us, can call back at once
            self._started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stop()
        super().handle_exit(sig, frame)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, required=True,
                   help="the agent's files: its identity (after join), storage, networks")
    p.add_argument("--listen", default="0.0.0.0", help="address to serve the engine on")
    p.add_argument("--port", type=int, default=8444)
    p.add_argument("--libvirt-uri", default="qemu:///system")
    p.add_argument("--import-dir", type=Path, action="append", default=None,
                   help="directory image and OVA imports may read files from (repeat it); "
                        "default STATE_DIR/import")
    p.add_argument("--import-allow-cidr", action="append", default=[],
                   help="range an import URL may reach although it is loopback, link-local "
                        "or this host's, e.g. 127.0.0.0/8 for a local mirror (repeat it)")
    p.add_argument("--reboot-command", default="systemctl reboot", metavar="CMD",
                   help="what `corral host reboot` runs on this machine (split like a shell)")
    p.add_argument("--poweroff-command", default="systemctl poweroff", metavar="CMD",
                   help="what `corral host shutdown` runs on this machine")
    p.add_argument("--protect-dir", type=Path, action="append", default=[],
                   help="another directory of corral's (the engine's data dir): never read, "
                        "written or made a pool for a user (repeat it)")
    p.add_argument("--lock-daemon-pidfile", type=Path, default=None, metavar="PATH",
                   help="virtlockd's pid file, on a host whose qemu.conf sets lock_manager = "
                        "\"lockd\" (disk leases): if virtlockd dies, this host's QEMUs are "
                        "killed (their leases died with it), then virtlockd and libvirtd are "
                        "started again; see docs/ha.md \"Disk leases\"")
    p.add_argument("--quorum", choices=("auto", "corosync", "none"), default="auto",
                   help="where the cluster membership reported to the engine comes from: "
                        "corosync (votequorum, corosync-quorumtool), none, or auto: corosync "
                        "once one runs here (its pid file /run/corosync.pid); see docs/ha.md "
                        "\"Quorum (corosync)\"")
    p.add_argument("--corosync-conf", type=Path, default=None, metavar="PATH",
                   help="keep this host's corosync.conf (and the authkey beside it) as the "
                        "engine renders them for its hosts, e.g. /etc/corosync/corosync.conf: "
                        "written again, and a running corosync reloaded, when a host joins or "
                        "leaves; see docs/ha.md \"Quorum (corosync)\"")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral-agent", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    join = sub.add_parser("join", help="join a cluster with a token, then serve",
                          description="Join the cluster of the engine at URL once (the token "
                          "from `corral host token` names the engine's CA, checked first), "
                          "then serve it; later starts: `run`.")
    join.add_argument("engine_url", metavar="URL", help="the engine, https://HOST:PORT")
    join.add_argument("--token", required=True, help="from `corral host token` on the engine")
    join.add_argument("--name", default=None, help="this host's name (default: its hostname)")
    join.add_argument("--address", default=None,
                      help="where the engine reaches this agent (default: --listen, or the "
                           "address this host reaches the engine from)")
    _common(join)
    run = sub.add_parser("run", help="serve with the identity kept at join")
    _common(run)
    for cmd in (join, run):
        cmd.add_argument("--heartbeat-interval", type=float, default=1.0, metavar="S",
                         help="seconds between reports to the engine (lifecycle events go "
                              "at once)")
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    try:
        parse_cidrs(args.import_allow_cidr)
    except InvalidInput as exc:
        p.error(exc.message)
    if not 0.05 <= args.heartbeat_interval <= 60:
        p.error("--heartbeat-interval is 0.05 to 60 seconds")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    identity = Identity.of(args.state_dir)
    try:
        if args.command == "join":
            _join(args, identity)
            # Serve as a fresh `run`: the join's imports (httpx, cryptography, the API
            # models: about 26 MiB) would stay resident in this process for good.
            os.execv(sys.executable, [sys.executable, "-m", "corral.agent", *_run_argv(args)])
        identity.require()
    except CorralError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)
    serve(args, identity)


def _run_argv(args: argparse.Namespace) -> list[str]:
    """``run`` with the serving options of ``args``."""
    argv = ["run", "--state-dir", str(args.state_dir), "--listen", args.listen,
            "--port", str(args.port), "--libvirt-uri", args.libvirt_uri,
            "--heartbeat-interval", str(args.heartbeat_interval)]
    for d in args.import_dir or []:
        argv += ["--import-dir", str(d)]
    for cidr in args.import_allow_cidr:
        argv += ["--import-allow-cidr", cidr]
    for d in args.protect_dir:
        argv += ["--protect-dir", str(d)]
    if args.lock_daemon_pidfile is not None:
        argv += ["--lock-daemon-pidfile", str(args.lock_daemon_pidfile)]
    argv += ["--quorum", args.quorum]
    if args.corosync_conf is not None:
        argv += ["--corosync-conf", str(args.corosync_conf)]
    argv += ["--reboot-command", args.reboot_command,
             "--poweroff-command", args.poweroff_command]
    return argv


def _join(args: argparse.Namespace, identity: Identity) -> None:
    from corral.agent import join as agent_join  # once per host: not kept by the idle agent

    if identity.exists():
        raise Conflict(f"this agent already joined the engine at {identity.engine_url} as "
                       f"{identity.name} ({identity.dir}): start it with `corral agent run`, "
                       "or remove that directory to join again")
    address = args.address or (args.listen if args.listen not in ("0.0.0.0", "::")
                               else agent_join.source_address(args.engine_url))
    name = args.name or socket.gethostname()
    host = f"[{address}]" if ":" in address else address
    agent_join.join(args.engine_url, args.token, name, f"https://{host}:{args.port}",
                    [address], identity)
    logging.info("joined the engine at %s as host %s", identity.engine_url, name)


def _quorum_reader(args: argparse.Namespace) -> QuorumReader | None:
    """This host's quorum provider for the reports (`--quorum`; auto: corosync once it runs)."""
    mode = getattr(args, "quorum", "auto")
    return None if mode == "none" else QuorumReader(mode)


def serve(args: argparse.Namespace, identity: Identity) -> None:
    """Serve the engine over mutual TLS until SIGTERM/SIGINT."""
    tune_malloc()
    migration_pki.install(identity, args.state_dir)  # libvirtd and QEMU read it (TLS)
    log_daemons = logging.getLogger("corral.agent")
    log_daemons.info(ensure_libvirtd(args.libvirt_uri))  # as `corral up`: none answers, start it
    settings = AgentSettings(state_dir=args.state_dir, libvirt_uri=args.libvirt_uri,
                             import_dirs=None if args.import_dir is None else
                             tuple(args.import_dir),
                             import_allow_cidrs=tuple(args.import_allow_cidr),
                             protected_dirs=tuple(args.protect_dir),
                             reboot_command=tuple(shlex.split(args.reboot_command)),
                             poweroff_command=tuple(shlex.split(args.poweroff_command)))
    atexit.register(children.kill_all)  # PDEATHSIG kills the children too; this their groups
    app = create_app(settings)
    reporter = Reporter(identity, app.state.agent.hv, args.heartbeat_interval,
                        quorum=_quorum_reader(args), guard=app.state.agent.guard,
                        corosync=None if args.corosync_conf is None else
                        CorosyncKeeper(args.corosync_conf))
    if args.lock_daemon_pidfile is not None:
        LockDaemonWatch(args.lock_daemon_pidfile).start()
    config = uvicorn.Config(app, host=args.listen, port=args.port, log_level="warning",
                            access_log=False,
                            ssl_context_factory=lambda _cfg, _default: identity.server_context())
    stats = app.state.stats

    def started() -> None:
        reporter.start()
        stats.start()  # the graphs' samples (corral.agent.vm_stats)

    server = _Server(config, app.state.jobs.stop_all, started=started)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # as uvicorn.run: the port was taken, or the app did not start
        sys.exit(3)


if __name__ == "__main__":
    main()
