"""`corral up`: the local agent (a child process) and the engine (this process)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from corral.api.cluster import JoinRequest
from corral.engine import server_tls
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host
from corral.engine.services import auth, host_join, hosts, networks, passwords, pools, users
from corral.engine.tls import ensure_tls
from corral.errors import Conflict, CorralError, InvalidInput, Unavailable
from corral.host_identity import Identity
from corral.node import hostnet
from corral.node.daemons import ensure_libvirtd
from corral.node.paths import DEFAULT_DATA_DIR, USER_CONFIG, NodePaths, write_private
from corral.peercert import PeerCertProtocol
from corral.pki import fingerprint, make_csr
from corral.secret_file import first_line
from corral.virt_type import VirtType, detect_virt_type

log = logging.getLogger("corral.up")


@dataclass
class UpOptions:
    data_dir: Path
    listen: str = "0.0.0.0"
    port: int = 8443
    subnet: str = "10.210.0.0/24"
    libvirt_uri: str = "qemu:///system"
    bridge: str = "corral0"  # of the default network: one per node on a machine
    # Imports (corral.safepaths, corral.safeurls): local files from DATA_DIR/import and these
    # directories; URLs to loopback/link-local/host addresses only in these ranges.
    import_dirs: tuple[Path, ...] = ()
    import_allow_cidrs: tuple[str, ...] = ()
    storage_overcommit: float = 1.0  # thin provisioning (EngineSettings.storage_overcommit)
    # False: the engine alone (hosts join it: `corral lab up`, a cluster's engine machine).
    local_agent: bool = True
    # The scheduler (EngineSettings.cpu_overcommit, memory_overcommit, placement).
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    placement: str = "spread"
    heartbeat_timeout_s: float = 5.0  # EngineSettings.heartbeat_timeout_s
    audit_retention_days: int = 365  # EngineSettings.audit_retention_days (0: forever)
    # The password of the `admin` user made on first start (else a random one, logged once).
    admin_password_file: Path | None = None
    # A certificate (and its key) to serve instead of corral's own to clients that ask for
    # one of its names (corral.engine.server_tls); else the one `corral cert set` kept.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def brought(self) -> server_tls.Brought | None:
        """The certificate this start serves besides corral's own, checked (a 422 when its
        files are unreadable, do not match, or it has expired)."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInput("--tls-cert and --tls-key go together",
                               field="tls_key" if self.tls_key is None else "tls_cert")
        files = ((self.tls_cert, self.tls_key) if self.tls_cert and self.tls_key
                 else server_tls.stored(NodePaths(self.data_dir).tls_dir))
        return server_tls.check_brought(*files) if files else None

    def setting_args(self) -> list[str]:
        """The import, storage, scheduler and heartbeat settings as `corral up` options."""
        return [*(a for d in self.import_dirs for a in ("--import-dir", str(d))),
                *(a for c in self.import_allow_cidrs for a in ("--import-allow-cidr", c)),
                "--storage-overcommit", str(self.storage_overcommit),
                "--cpu-overcommit", str(self.cpu_overcommit),
                "--memory-overcommit", str(self.memory_overcommit),
                "--placement", self.placement,
                "--heartbeat-timeout", str(self.heartbeat_timeout_s),
                "--audit-retention", str(self.audit_retention_days),
                *(["--admin-password-file", str(self.admin_password_file)]
                  if self.admin_password_file else []),
                *(["--tls-cert", str(self.tls_cert)] if self.tls_cert else []),
                *(["--tls-key", str(self.tls_key)] if self.tls_key else [])]


def _pid_alive(pid_file: Path) -> int | None:
    """The pid in the file if that process lives (a zombie does not: PID 1 may not reap)."""
    try:
        pid = int(pid_file.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return None if stat.rpartition(")")[2].split()[0] == "Z" else pid


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
               verify: bool | str | ssl.SSLContext = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"process exited with code {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise Unavailable(f"{url} did not answer within {timeout:g} s")


class AgentSupervisor:
    """Runs the local agent and starts it again if it dies (its VMs keep running).

    The local agent joins the engine as any host does (corral.engine.services.host_join),
    only in-process: a one-time token is made and spent at once for its CSR."""

    def __init__(self, paths: NodePaths, port: int, libvirt_uri: str,
                 settings: EngineSettings | None = None) -> None:
        self.paths, self.port, self.uri = paths, port, libvirt_uri
        self.settings = settings or EngineSettings(data_dir=paths.data_dir)  # imports: the same
        self.url = f"https://127.0.0.1:{port}"
        self.identity = Identity.of(paths.agent_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._tls: ssl.SSLContext | None = None

    def join(self, ctx: EngineContext, name: str, engine_url: str) -> None:
        """Join the engine once; later starts keep the identity. A host row made before
        certificates existed (no fingerprint) is taken over by this join."""
        self._tls = ctx.agent_tls()
        if self.identity.exists() and (self.identity.url, self.identity.engine_url) == \
                (self.url, engine_url):
            with ctx.db.session() as s:
                row = s.query(Host).filter_by(name=name).one_or_none()
                fp = fingerprint(self.identity.cert.read_bytes())
                if row is not None and row.cert_fingerprint == fp:
                    return
        shutil.rmtree(self.identity.dir, ignore_errors=True)  # another engine's, or stale
        with ctx.db.session() as s:
            row = s.query(Host).filter_by(name=name).one_or_none()
            if row is not None:
                row.cert_fingerprint = None  # this node's own host: it joins again
        token = host_join.create_token(ctx, ttl_s=60).token
        key_pem, csr = make_csr(name, ["127.0.0.1"])
        answer = host_join.join(ctx, JoinRequest(token=token, name=name, url=self.url,
                                                 csr=csr.decode()))
        self.identity.save(key_pem, answer.certificate, answer.ca, answer.engine_certificate,
                           engine_url, name, self.url)

    def start(self) -> None:
        old = _pid_alive(self.paths.agent_pid)
        if old is not None:  # an agent left by a killed engine: replace it
            os.kill(old, signal.SIGTERM)  # it stops its jobs and kills their children at once
            deadline = time.monotonic() + 10  # gone before the new one sweeps its .part files
            while _pid_alive(self.paths.agent_pid) == old and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(OSError):  # still that agent (not a reused pid): kill it
                if b"corral.agent" in Path(f"/proc/{old}/cmdline").read_bytes():
                    os.kill(old, signal.SIGKILL)  # its children die with it (corral.agent.children)
                    time.sleep(0.2)
        argv = [sys.executable, "-m", "corral.agent", "run", "--state-dir",
                str(self.paths.agent_dir), "--listen", "127.0.0.1", "--port", str(self.port),
                "--libvirt-uri", self.uri,
                # the engine's data dir (its database) is corral's too; imports as the engine's
                "--protect-dir", str(self.paths.data_dir)]
        for d in self.settings.all_import_dirs:
            argv += ["--import-dir", str(d)]
        for cidr in self.settings.import_allow_cidrs:
            argv += ["--import-allow-cidr", cidr]
        logf = open(self.paths.agent_log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.paths.agent_pid.write_text(str(self.proc.pid))
        _wait_http(f"{self.url}/v1/health", 60, self.proc,
                   verify=self._tls if self._tls is not None else True)

    def watch(self) -> None:
        def loop() -> None:
            while not self._stopping.wait(1.0):
                if self.proc is not None and self.proc.poll() is not None:
                    log.warning("agent exited (%s); restarting it", self.proc.returncode)
                    try:
                        self.start()
                    except CorralError as exc:
                        log.error("agent restart failed: %s", exc)

        threading.Thread(target=loop, name="agent-supervisor", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.paths.agent_pid.unlink(missing_ok=True)


def _client_config(ctx: EngineContext, paths: NodePaths, opts: UpOptions, ca: Path) -> None:
    """Write {url, ca, token} for the CLI; a new admin token only on first start."""
    host = "127.0.0.1" if opts.listen in ("0.0.0.0", "::") else opts.listen
    url = f"https://{host}:{opts.port}"
    cfg = json.loads(paths.client_config.read_text()) if paths.client_config.exists() else {}
    made = users.ensure_admin(ctx, read_password_file(opts.admin_password_file)
                              if opts.admin_password_file else None)
    if made is not None:  # the one time it is shown
        if paths.log.exists():  # where a detached start's console goes: now holds a secret
            paths.log.chmod(0o600)
        log.warning("user %s made with password %s (shown this once: `corral login` with "
                    "it; `corral user passwd` changes it)", users.ADMIN, made)
    if not cfg.get("token"):
        cfg["token"] = auth.create_token(ctx, "admin", user=users.ADMIN)
    cfg.update(url=url, ca=str(ca), data_dir=str(paths.data_dir))
    write_private(paths.client_config, json.dumps(cfg, indent=2) + "\n")
    # Only the machine's own node is everybody's default: a node started with another data
    # dir (CORRAL_DATA_DIR included) must not take over ~/.config/corral/client.json.
    if paths.data_dir == DEFAULT_DATA_DIR and os.geteuid() == 0:
        write_private(USER_CONFIG, json.dumps(cfg, indent=2) + "\n")


def read_password_file(path: Path) -> str:
    """The password in a file (its first line), checked as `corral user create` checks one."""
    password = first_line(path, "admin_password_file")
    passwords.check_strength(password, field="admin_password_file")
    return password


def check_traversable(path: Path) -> None:
    """QEMU runs as an unprivileged user (libvirt-qemu): it must reach the disks below path."""
    for d in [path, *path.parents]:
        if d.exists() and not d.stat().st_mode & 0o001:
            raise Unavailable(
                f"{d} is not searchable by other users, so QEMU (user libvirt-qemu) cannot reach "
                f"VM disks under {path}: run `chmod o+x {d}` or choose another --data-dir"
            )


def run_up(opts: UpOptions) -> None:
    """Foreground: returns when the engine stops (SIGTERM/SIGINT)."""
    paths = NodePaths(opts.data_dir)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    # 0711: QEMU (user libvirt-qemu) must reach the disks below; listing stays private.
    os.chmod(paths.data_dir, 0o711)
    check_traversable(paths.data_dir)
    paths.import_dir.mkdir(mode=0o700, exist_ok=True)  # what image/OVA imports may read
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    virt = detect_virt_type()
    log.info("virtualization: %s (%s)", virt.type.value, virt.note)
    if opts.local_agent:
        log.info(ensure_libvirtd(opts.libvirt_uri, hide_kvm=virt.type == VirtType.QEMU))
    settings = EngineSettings(data_dir=paths.data_dir, import_dirs=tuple(opts.import_dirs),
                              import_allow_cidrs=tuple(opts.import_allow_cidrs),
                              storage_overcommit=opts.storage_overcommit,
                              cpu_overcommit=opts.cpu_overcommit,
                              memory_overcommit=opts.memory_overcommit,
                              placement=opts.placement,
                              heartbeat_timeout_s=opts.heartbeat_timeout_s,
                              audit_retention_days=opts.audit_retention_days)
    brought = opts.brought()  # before anything starts: a bad file is said at once
    ctx = build_context(settings)
    ca, cert, key = ensure_tls(paths.tls_dir, [opts.listen])
    if brought is not None:
        log.info("HTTPS: %s for %s (valid until %s); corral's own certificate for other "
                 "names, IP addresses and agents", brought.cert, ", ".join(brought.names),
                 f"{brought.not_after:%Y-%m-%d}")
        if brought.not_after - dt.datetime.now(dt.UTC) < dt.timedelta(days=14):
            log.warning("the certificate in %s expires on %s: renew it (`corral cert set`)",
                        brought.cert, f"{brought.not_after:%Y-%m-%d}")
    tls = server_tls.server_context(cert, key, ca, brought)  # TLS 1.2 or newer
    agent = AgentSupervisor(paths, opts.port + 1, opts.libvirt_uri, settings)
    if opts.local_agent:
        here = "127.0.0.1" if opts.listen in ("0.0.0.0", "::") else opts.listen
        agent.join(ctx, socket.gethostname(), f"https://{here}:{opts.port}")
        agent.start()
    try:
        if opts.local_agent:
            hosts.refresh(ctx, hosts.by_name(ctx, socket.gethostname()))
            try:
                networks.ensure_default(ctx, opts.subnet, opts.bridge)
            except Conflict as exc:  # e.g. another node's bridge: say what to pass instead
                if exc.field not in ("bridge", "subnet"):
                    raise
                extra = f" --port {opts.port}" if opts.port != UpOptions.port else ""
                raise hostnet.explain(exc, paths.data_dir, opts.subnet, opts.bridge,
                                      extra) from exc
            pools.ensure_default(ctx)  # the `default` dir pool: the agent's storage dir
        _client_config(ctx, paths, opts, ca)
        paths.engine_pid.write_text(str(os.getpid()))
        if opts.local_agent:
            agent.watch()
        # Clients without a certificate (the CLI, browsers) are welcome; an agent shows its
        # host's, which must be of this CA (checked by `tls`) and of a registered host (routes).
        config = uvicorn.Config(
            create_app(ctx), host=opts.listen, port=opts.port,
            ssl_context_factory=lambda _config, _default: tls,
            http=PeerCertProtocol, log_level="warning", access_log=False, lifespan="on",
        )
        uvicorn.Server(config).run()
    finally:
        agent.stop()
        paths.engine_pid.unlink(missing_ok=True)


def start_detached(opts: UpOptions, timeout: float = 120) -> None:
    """Run `corral up` in the background and return once its API answers."""
    paths = NodePaths(opts.data_dir)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    if _pid_alive(paths.engine_pid):
        raise Unavailable(f"corral is already running from {paths.data_dir} (`corral down`)")
    argv = [sys.executable, "-m", "corral.cli.main", "up", "--data-dir", str(opts.data_dir),
            "--listen", opts.listen, "--port", str(opts.port), "--subnet", opts.subnet,
            "--bridge", opts.bridge, "--libvirt-uri", opts.libvirt_uri, *opts.setting_args(),
            *([] if opts.local_agent else ["--no-local-agent"])]
    logf = open(paths.log, "ab")  # noqa: SIM115 - the child keeps it
    start = logf.tell()  # what this start writes: its error is there, not older runs'
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    host = "127.0.0.1" if opts.listen in ("0.0.0.0", "::") else opts.listen
    try:
        _wait_http(f"https://{host}:{opts.port}/api/v1/health", timeout, proc,
                   verify=False)  # the CA may not exist yet when we start waiting
    except Unavailable as exc:
        with open(paths.log, "rb") as f:
            f.seek(start)
            tail = f.read().decode(errors="replace")[-3000:]
        raise Unavailable(f"corral did not start: {exc}\n--- {paths.log} ---\n{tail}") from exc


def stop(data_dir: Path, timeout: float = 30) -> bool:
    """Stop what `corral up --detach` started; False when nothing was running."""
    paths = NodePaths(data_dir)
    pid = _pid_alive(paths.engine_pid)
    stopped = False
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(paths.engine_pid) == pid:
            time.sleep(0.1)
        stopped = True
    agent = _pid_alive(paths.agent_pid)
    if agent is not None:
        os.kill(agent, signal.SIGTERM)
        stopped = True
    paths.engine_pid.unlink(missing_ok=True)
    paths.agent_pid.unlink(missing_ok=True)
    return stopped
