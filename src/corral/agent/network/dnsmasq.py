"""One dnsmasq per network: DHCP (and DNS for the guests' names) on its gateway device only.

Files, all under ``<state_dir>/<name>/``: ``dnsmasq.conf`` (generated), ``dnsmasq.pid``,
``dnsmasq.leases``, ``dnsmasq.log``, ``dnsmasq.hosts`` (static leases: ``MAC,IP,NAME`` lines
that the engine sets through :func:`set_reservations`; dnsmasq re-reads it on SIGHUP).
dnsmasq daemonizes itself, so it outlives the agent; an
agent that comes back finds it again through the pid file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from corral.agent.network import _cmd, firewall
from corral.agent.network.spec import network_dir
from corral.agent_api.networks import Lease, NetworkSpec, parse_subnet
from corral.errors import HostError

log = logging.getLogger(__name__)
LEASE_TIME = "12h"
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Paths:
    dir: Path
    conf: Path
    pid: Path
    leases: Path
    log: Path
    hosts: Path
    script: Path  # --dhcp-script, shared by the networks (firewall.dhcp_script)

    @classmethod
    def of(cls, spec: NetworkSpec, state_dir: Path) -> Paths:
        d = network_dir(spec, state_dir)
        return cls(d, d / "dnsmasq.conf", d / "dnsmasq.pid", d / "dnsmasq.leases",
                   d / "dnsmasq.log", d / "dnsmasq.hosts", d.parent / "dhcp-learn.sh")


def render_config(spec: NetworkSpec, paths: Paths) -> str:
    """The dnsmasq config for a validated ``spec``.

    Values are re-derived from parsed addresses (canonical forms) and every line is checked to
    be a single line, so nothing from the spec can add an option of its own.
    """
    net = parse_subnet(spec.subnet)
    gateway = ipaddress.IPv4Address(spec.gateway)
    start = ipaddress.IPv4Address(spec.dhcp_start)
    end = ipaddress.IPv4Address(spec.dhcp_end)
    lines = [
        f"# corral network {spec.name}: generated, do not edit",
        "bind-interfaces",
        f"interface={spec.l3_device}",
        "except-interface=lo",
        f"dhcp-range={start},{end},{net.netmask},{LEASE_TIME}",
        f"dhcp-leasefile={paths.leases}",
        f"dhcp-hostsfile={paths.hosts}",
        # every lease change reaches the NICs' anti-spoofing and security group rules
        f"dhcp-script={paths.script}",
        f"pid-file={paths.pid}",
        "no-resolv",
        "no-hosts",
        "no-poll",
        "dhcp-authoritative",
        # The range belongs to this dnsmasq alone; its ping check before each new lease
        # would delay every new guest's first DHCP answer by about 3 s.
        "no-ping",
        f"dhcp-option=option:router,{gateway}",
        f"dhcp-option=option:dns-server,{gateway}",
        f"log-facility={paths.log}",
    ]
    if spec.mtu:
        lines.append(f"dhcp-option=option:mtu,{int(spec.mtu)}")
    if spec.dns_domain:
        lines += [
            f"domain={spec.dns_domain}",
            f"local=/{spec.dns_domain}/",
            "expand-hosts",
        ]
    for line in lines:
        if "\n" in line or "\r" in line or "\0" in line:
            raise ValueError(f"refusing a multi-line dnsmasq option: {line!r}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _same_netns(pid: int) -> bool:
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
        ours = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _runs_conf(pid: int, paths: Paths) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return comm == "dnsmasq" and f"--conf-file={paths.conf}".encode() in cmdline


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _helpers(pid: int, paths: Paths) -> list[int]:
    """The ``--dhcp-script`` helper processes of dnsmasq ``pid`` (its children)."""
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and _ppid(int(e.name)) == pid and _runs_conf(int(e.name), paths)]


def _is_ours(pid: int, paths: Paths) -> bool:
    """``pid`` is a dnsmasq started with our config file, in this network namespace (the
    server itself, not its ``--dhcp-script`` helper: a child with the same command line)."""
    if not _runs_conf(pid, paths):
        return False
    ppid = _ppid(pid)
    if not ppid or _runs_conf(ppid, paths):
        return False
    return _same_netns(pid) and _alive(pid)


def running_pid(paths: Paths) -> int | None:
    """The pid of this network's live dnsmasq, else None.

    The pid file is asked first; when it is missing or stale (deleted by hand, a crash while
    writing it), /proc is searched for a dnsmasq with our config in this network namespace,
    so that a lost pid file never leaves a second dnsmasq or an unkillable one behind.
    """
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid > 1 and _is_ours(pid, paths):
        return pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_ours(int(entry.name), paths):
            return int(entry.name)
    return None


def served_devices() -> dict[str, Path]:
    """Device -> config file of every live corral dnsmasq in this network namespace, whoever
    started it (another node on this machine too): its config's ``interface=`` line.

    Tells whose a device is where no alias says so (a bridge made before bridges carried one).
    """
    out: dict[str, Path] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry, "comm").read_text().strip() != "dnsmasq":
                continue
            args = Path(entry, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in args:
            if not arg.startswith(b"--conf-file="):
                continue
            conf = Path(arg.removeprefix(b"--conf-file=").decode(errors="replace"))
            device = config_device(conf)
            if device and _same_netns(int(entry.name)) and _alive(int(entry.name)):
                out.setdefault(device, conf)
    return out


def config_device(conf: Path) -> str | None:
    """The ``interface=`` of a config corral generated (its first line says so), else None."""
    try:
        lines = conf.read_text().splitlines()
    except OSError:
        return None
    if not lines or not lines[0].startswith("# corral network "):
        return None
    return next((line.removeprefix("interface=") for line in lines
                 if line.startswith("interface=")), None)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop(paths: Paths, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop this network's dnsmasq (TERM, then KILL). True when one was running."""
    pid = running_pid(paths)
    if pid is None:
        paths.pid.unlink(missing_ok=True)
        return False
    helpers = _helpers(pid, paths)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        if not _alive(pid):
            break
    if _alive(pid):
        raise HostError(f"dnsmasq (pid {pid}) did not stop", pid=pid)
    deadline = time.monotonic() + timeout  # its script helper exits when it sees it gone
    while time.monotonic() < deadline and any(_alive(h) for h in helpers):
        time.sleep(0.02)
    for h in helpers:
        if _alive(h) and _runs_conf(h, paths):
            with contextlib.suppress(ProcessLookupError):
                os.kill(h, signal.SIGKILL)
    paths.pid.unlink(missing_ok=True)
    log.info("stopped dnsmasq pid %d (%s)", pid, paths.conf)
    return True


def ensure(spec: NetworkSpec, state_dir: Path, *, restart: bool = False) -> int:
    """Write the config and make sure one dnsmasq serves it; returns its pid.

    A running dnsmasq is restarted when the config changed or ``restart`` is set (e.g. the
    bridge was just re-created: dnsmasq's sockets are bound to the old interface).
    """
    paths = Paths.of(spec, state_dir)
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    text = render_config(spec, paths)
    try:
        changed = paths.conf.read_text() != text
    except OSError:
        changed = True
    if changed:
        _write_atomic(paths.conf, text)
    if not paths.hosts.exists():
        _write_atomic(paths.hosts, "")
    node = Path(state_dir).absolute().parent  # state_dir: <agent state dir>/networks
    firewall.write_dhcp_script(paths.script, firewall.SgTables.for_state_dir(node))
    pid = running_pid(paths)
    if pid is not None and not changed and not restart:
        try:
            named = paths.pid.read_text().strip()
        except OSError:
            named = ""
        if named != str(pid):  # found through /proc: put the pid file back
            _write_atomic(paths.pid, f"{pid}\n")
        return pid
    if pid is not None:
        stop(paths)
    paths.pid.unlink(missing_ok=True)
    # dnsmasq daemonizes; the parent exits once the child has bound its sockets, with a
    # non-zero status and a message on stderr when it could not.
    _cmd.run(["dnsmasq", f"--conf-file={paths.conf}"], timeout=15)
    deadline = time.monotonic() + 5
    while (pid := running_pid(paths)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if pid is None:
        raise HostError(
            f"dnsmasq for network {spec.name} started but no live process is named in "
            f"{paths.pid}; see {paths.log}"
        )
    log.info("network %s: dnsmasq running, pid %d", spec.name, pid)
    return pid


def delete(spec: NetworkSpec, state_dir: Path) -> None:
    """Stop dnsmasq and remove this network's files (the directory too, when empty)."""
    paths = Paths.of(spec, state_dir)
    stop(paths)
    for path in (paths.conf, paths.pid, paths.leases, paths.log, paths.hosts,
                 paths.hosts.with_name(f".{paths.hosts.name}.tmp"),
                 paths.conf.with_name(f".{paths.conf.name}.tmp")):
        path.unlink(missing_ok=True)
    try:
        paths.dir.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("network %s: could not remove %s: %s", spec.name, paths.dir, exc)


def status(spec: NetworkSpec, state_dir: Path) -> bool:
    return running_pid(Paths.of(spec, state_dir)) is not None


def parse_leases(text: str) -> list[Lease]:
    """Parse dnsmasq's lease file: ``EXPIRY MAC IP HOSTNAME CLIENT-ID`` per line."""
    out: list[Lease] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "duid":
            continue
        try:
            expires = int(fields[0])
            ip = ipaddress.ip_address(fields[2])
        except ValueError:
            continue
        if ip.version != 4:
            continue
        hostname = None if fields[3] == "*" else fields[3]
        out.append(Lease(mac=fields[1].lower(), ip=str(ip), hostname=hostname, expires=expires))
    return out


def leases(spec: NetworkSpec, state_dir: Path) -> list[Lease]:
    try:
        text = Paths.of(spec, state_dir).leases.read_text()
    except FileNotFoundError:
        return []
    return parse_leases(text)


def render_hosts(spec: NetworkSpec, entries: list[tuple[str, str, str]]) -> str:
    """``dhcp-host`` lines (``MAC,IP,NAME``) for ``entries`` of (mac, ip, name), checked:
    a well-formed MAC, an address inside the subnet, a DNS label as the name."""
    net = parse_subnet(spec.subnet)
    lines = []
    for mac, ip, name in entries:
        mac = mac.lower()
        if not _MAC_RE.fullmatch(mac):
            raise ValueError(f"reservation MAC {mac!r} is not six hex bytes")
        addr = ipaddress.IPv4Address(ip)
        if addr not in net:
            raise ValueError(f"reservation {addr} is outside {net}")
        if not _LABEL_RE.fullmatch(name):
            raise ValueError(f"reservation name {name!r} is not a DNS label")
        lines.append(f"{mac},{addr},{name}")
    return "".join(f"{line}\n" for line in lines)


def set_reservations(spec: NetworkSpec, state_dir: Path,
                     entries: list[tuple[str, str, str]]) -> bool:
    """Write the static leases and make a running dnsmasq re-read them (SIGHUP). True when
    the file changed. A dnsmasq started later reads the file at its start."""
    paths = Paths.of(spec, state_dir)
    text = render_hosts(spec, entries)
    try:
        if paths.hosts.read_text() == text:
            return False
    except OSError:
        pass
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    _write_atomic(paths.hosts, text)
    pid = running_pid(paths)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
    return True


def reservations(spec: NetworkSpec, state_dir: Path) -> list[dict[str, str]]:
    try:
        text = Paths.of(spec, state_dir).hosts.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        mac, _, rest = line.partition(",")
        ip, _, name = rest.partition(",")
        if mac and ip:
            out.append({"mac": mac, "ip": ip, "name": name})
    return out
