"""A lab host: one more "hypervisor host" on this machine, for tests and ``corral lab``.

A lab host is a network namespace ``corral-<name>`` joined to the machine by a veth pair
(``crl-<name>`` here, ``lab0`` inside; 10.209.<index>.1/30 and .2/30) and to the other lab
hosts through a shared router namespace (see ``_net``), plus a private mount and UTS
namespace kept alive by a *holder* process::

    ip netns exec corral-<name> unshare --mount --uts --propagation private sleep infinity

``ip netns exec`` mounts a sysfs of the namespace on /sys (so /sys/class/net shows the lab's
interfaces, and /sys/fs/cgroup is empty). In the holder's mount namespace, directories of
``root_dir`` are bound over /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt (and /etc/openvswitch, /run/openvswitch, /var/log/openvswitch, for an Open
vSwitch its agent may start), and the lab host runs its own virtlogd and libvirtd (pid files
in ``root_dir/run``), and virtlockd too in a lab with shared storage (disk leases, see
``_config.write_lockd_conf``). Commands enter both namespaces with ``nsenter --target <holder>``.

/dev/kvm: this machine has no udev, so /dev/kvm is root-only (0600). libvirt then finds KVM
unusable for its QEMU user while its capability probe (run with CAP_DAC_OVERRIDE) sees KVM
working, and it re-probes QEMU (about 4 s a binary) on every capability lookup: ``virsh
create`` took about 45 s. A lab host therefore gets its own /dev/kvm node, 0660 root:kvm as
udev makes it, bound over /dev/kvm in its mount namespace. Guests still have to use
``domain type='qemu'`` (TCG) here: nested KVM hangs in guest boot on this machine.

Layout of ``root_dir``: etc/ (copy of /etc/libvirt, kept across restarts), run/ (removed by
stop), lib/libvirt, log/libvirt (+ holder.log), cache/libvirt, dev/kvm, hosts (bound over
/etc/hosts: the machine's plus ``<address> corral-<name>``), hugepages/SIZEkB (a hugetlbfs
per page size, mounted in the lab host only), tls-pki (a cluster's lab host: the directory
of the certificates its libvirtd listens with, TLS only). The lab host's hostname (own UTS
namespace) is ``corral-<name>``.

corosync (a lab with quorum, corral.lab.cluster): corosync/corosync.conf (written by the lab
once it knows every host), lib/corosync (its state_dir), log/corosync.log, and run/corosync.pid
bound over /run/corosync.pid (a path corosync does not let one change). Its IPC sockets are
abstract unix sockets, private to the network namespace, so corosync-quorumtool run inside
the lab host talks to the host's own corosync.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import logging
import os
import re
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from corral.agent.migration_pki import ready
from corral.errors import HostError, InvalidInput, WrongState
from corral.lab import _config, _net, _procs

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,7}$")
INDEX_MIN, INDEX_MAX = 1, 250
READY_TIMEOUT_S = 30.0
INNER_IFNAME = "lab0"
_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes, the last one NUL

# (directory under root_dir, path it is bound over inside the lab host)
_BINDS: tuple[tuple[str, str], ...] = (
    ("etc", "/etc/libvirt"),
    ("run/libvirt", os.path.realpath("/var/run/libvirt")),
    ("lib/libvirt", "/var/lib/libvirt"),
    ("log/libvirt", "/var/log/libvirt"),
    ("cache/libvirt", "/var/cache/libvirt"),
    # Open vSwitch of the lab host (started by its agent): private database, sockets, logs at
    # the default paths, where libvirt's ovs-vsctl looks when it plugs a guest port.
    ("lib/openvswitch", "/etc/openvswitch"),
    ("run/openvswitch", os.path.realpath("/var/run/openvswitch")),
    ("log/openvswitch", "/var/log/openvswitch"),
)
# corosync writes its pid file at a fixed path (no option): each lab host binds a file of
# its own run/ over it (the machine's gets an empty file as the mount point).
_COROSYNC_PIDFILE = os.path.realpath("/var/run") + "/corosync.pid"
_HOST_CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
_HUGEPAGE_POOLS = Path("/sys/kernel/mm/hugepages")
# QEMU capability cache files of the lab hosts that came up in this process: file name ->
# contents, the seed of the next lab host's cache.
_CAPS_SEED: dict[str, bytes] = {}


class LabHost:
    """A network + mount namespace with its own libvirtd; see the module docstring."""

    def __init__(self, name: str, index: int, root_dir: Path,
                 tls_pki: Path | None = None, lockspace: Path | None = None,
                 quorum: bool = False) -> None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidInput(
                f"lab host name {name!r} must be 1-8 characters of a-z, 0-9 and '-', "
                "starting with a letter or digit",
                field="name",
            )
        if isinstance(index, bool) or not isinstance(index, int) or not (INDEX_MIN <= index <= INDEX_MAX):
            raise InvalidInput(
                f"lab host index must be an integer from {INDEX_MIN} to {INDEX_MAX}",
                field="index",
            )
        self.name = name
        self.index = index
        self.root_dir = Path(root_dir).absolute()
        self.netns = f"corral-{name}"
        self.veth = f"crl-{name}"
        self.subnet = ipaddress.IPv4Network(f"10.209.{index}.0/30")
        self.gateway = str(self.subnet.network_address + 1)
        self.address = str(self.subnet.network_address + 2)
        self.host_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.netns}.lab.corral"))
        # A cluster's lab host: libvirtd listens with TLS only, with the certificates its
        # agent lays out there (corral.agent.migration_pki); None: plain TCP (a lab host
        # on its own). Kept in root_dir/tls-pki for later processes (power-on).
        self.tls_pki = tls_pki
        # The disk leases' directory on storage every lab host shares (a lab with shared
        # storage): libvirt's lock manager lockd, a virtlockd per host. Kept in
        # root_dir/lockspace for later processes (power-on, the agent's argv).
        self.lockspace = lockspace
        # The lab host runs corosync (a lab with quorum): root_dir/corosync/ is made at start
        # and says so to later processes; the lab writes corosync.conf there once it knows
        # every host (corral.lab.cluster).
        self.quorum = quorum
        self._holder: subprocess.Popen[bytes] | None = None
        self._holder_pid: int | None = None
        if len(str(self._socket_path())) > _SOCKET_PATH_MAX:
            raise InvalidInput(
                f"root_dir {str(self.root_dir)!r} is too long for a unix socket path",
                field="root_dir",
            )

    # -- paths -------------------------------------------------------------------------

    def _socket_path(self) -> Path:
        return self.root_dir / "run" / "libvirt" / "libvirt-sock"

    @property
    def _run(self) -> Path:
        return self.root_dir / "run"

    def libvirt_uri(self) -> str:
        """A URI that reaches this lab host's libvirtd from the machine's own namespaces."""
        return f"qemu:///system?socket={self._socket_path()}"

    # -- running commands inside -------------------------------------------------------

    def _prefix(self, cwd: str | os.PathLike[str] | None = None) -> list[str]:
        pid = self._holder_pid
        if pid is None or not _procs.is_alive(pid):
            raise WrongState(f"lab host {self.name!r} is not running")
        # Entering a mount namespace resets the working directory to its root: keep ours.
        wd = os.fspath(cwd) if cwd is not None else os.getcwd()
        return ["nsenter", f"--target={pid}", "--mount", "--net", "--uts", f"--wd={wd}", "--"]

    def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the lab host; ``env`` adds to (not replaces) our environment.

        With ``check``, a non-zero exit or a timeout raises HostError (stderr in the message).
        """
        full_env = {**os.environ, **env} if env is not None else None
        try:
            return subprocess.run(
                self._prefix() + argv,
                env=full_env,
                timeout=timeout,
                check=check,
                input=input,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise HostError(
                f"{' '.join(argv)} failed in lab host {self.name!r} "
                f"(exit {exc.returncode}): {(exc.stderr or '').strip()}",
                argv=argv,
                returncode=exc.returncode,
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise HostError(
                f"{' '.join(argv)} did not finish in {timeout} s in lab host {self.name!r}",
                argv=argv,
            ) from exc

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``argv`` inside the lab host (text mode); ``cwd`` is honoured inside.

        stop() kills it with everything else in the lab host; the caller still reaps it.
        """
        prefix = self._prefix(kwargs.pop("cwd", None))
        kwargs.setdefault("text", True)
        proc: subprocess.Popen[str] = subprocess.Popen(prefix + argv, **kwargs)
        return proc

    # -- start -------------------------------------------------------------------------

    def start(self) -> None:
        """Build the lab host and wait until its libvirtd answers; cleans up if it fails."""
        if self._holder_pid is not None and _procs.is_alive(self._holder_pid):
            raise WrongState(f"lab host {self.name!r} is already started")
        t0 = time.monotonic()
        _net.check_free(self.netns, self.veth, self.subnet)
        try:
            self._prepare_dirs()
            self._create_network()
            self._start_holder()
            self._bind_mounts()
            self._mount_hugetlbfs()
            self._start_daemons()
            self._wait_ready()
            self._remember_caps_cache()
        except BaseException:
            log.warning("lab host %s: start failed, cleaning up", self.name)
            self.stop()
            raise
        log.info("lab host %s started in %.2f s", self.name, time.monotonic() - t0)

    def _prepare_dirs(self) -> None:
        shutil.rmtree(self._run, ignore_errors=True)
        for sub, _ in _BINDS:
            (self.root_dir / sub).mkdir(parents=True, exist_ok=True)
        _config.copy_etc(Path("/etc/libvirt"), self.root_dir / "etc")
        _config.write_lab_configs(
            self.root_dir / "etc", name=self.name, address=self.address,
            host_uuid=self.host_uuid, pki=self.tls_pki, lockspace=self.lockspace,
        )
        marker = self.root_dir / "tls-pki"
        if self.tls_pki is not None:
            # libvirtd refuses to start while qemu.conf names a directory that is not there;
            # the agent fills it when it starts (QEMU reads the files only to migrate).
            self.tls_pki.mkdir(mode=0o750, parents=True, exist_ok=True)
            marker.write_text(f"{self.tls_pki}\n")
        else:
            marker.unlink(missing_ok=True)
        lockspace = self.root_dir / "lockspace"
        if self.lockspace is not None:
            self.lockspace.mkdir(mode=0o700, parents=True, exist_ok=True)
            lockspace.write_text(f"{self.lockspace}\n")
        else:
            lockspace.unlink(missing_ok=True)
        if self.quorum:
            self.corosync_conf().parent.mkdir(exist_ok=True)
            self.corosync_state_dir().mkdir(parents=True, exist_ok=True)
        else:
            shutil.rmtree(self.corosync_conf().parent, ignore_errors=True)
        self._seed_caps_cache()
        self._make_kvm_node()
        self._write_hosts_file()

    def _caps_cache(self) -> Path:
        return self.root_dir / "cache" / "libvirt" / "qemu" / "capabilities"

    def _seed_caps_cache(self) -> None:
        """Start from a QEMU capability cache probed before, by a lab host or the machine.

        A probe costs about 4 s a QEMU binary here; libvirt re-probes whatever is outdated.
        """
        dst = self._caps_cache()
        if dst.is_dir() and any(dst.glob("*.xml")):
            return
        seed = dict(_CAPS_SEED)
        if not seed and _HOST_CAPS_CACHE.is_dir():
            for file in _HOST_CAPS_CACHE.glob("*.xml"):
                with contextlib.suppress(OSError):
                    seed[file.name] = file.read_bytes()
        if seed:
            dst.mkdir(parents=True, exist_ok=True)
            for name, data in seed.items():
                (dst / name).write_bytes(data)
                os.chmod(dst / name, 0o600)

    def _remember_caps_cache(self) -> None:
        for file in self._caps_cache().glob("*.xml"):
            with contextlib.suppress(OSError):
                _CAPS_SEED[file.name] = file.read_bytes()

    def _write_hosts_file(self) -> None:
        """The machine's /etc/hosts plus the lab host's own name on its address.

        libvirtd resolves its hostname; without this line the lookup would go to DNS (which
        the lab host cannot reach: it has no route beyond its /30).
        """
        try:
            machine = Path("/etc/hosts").read_text()
        except OSError:
            machine = "127.0.0.1\tlocalhost\n"
        if machine and not machine.endswith("\n"):
            machine += "\n"
        hosts = self.root_dir / "hosts"
        hosts.write_text(f"{machine}# corral lab host\n{self.address}\t{self.netns}\n")
        os.chmod(hosts, 0o644)

    def _kvm_node(self) -> Path:
        return self.root_dir / "dev" / "kvm"

    def _make_kvm_node(self) -> None:
        node = self._kvm_node()
        node.unlink(missing_ok=True)
        try:
            rdev = os.stat("/dev/kvm").st_rdev
        except FileNotFoundError:
            return
        node.parent.mkdir(exist_ok=True)
        if os.statvfs(node.parent).f_flag & os.ST_NODEV:
            log.warning("lab host %s: %s is on a nodev mount; keeping /dev/kvm", self.name, node)
            return
        try:
            gid = grp.getgrnam("kvm").gr_gid
            mode = 0o660
        except KeyError:
            gid, mode = 0, 0o666
        os.mknod(node, stat.S_IFCHR | mode, rdev)
        os.chown(node, 0, gid)
        os.chmod(node, mode)

    def _create_network(self) -> None:
        _net.create(self.netns, self.veth, INNER_IFNAME, self.subnet, self.gateway, self.address)
        _net.connect_router(self.netns, self.name, self.subnet)

    def _start_holder(self) -> None:
        self._run.mkdir(parents=True, exist_ok=True)
        logdir = self.root_dir / "log"
        with open(logdir / "holder.log", "ab") as logf:
            self._holder = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    "unshare",
                    "--mount",
                    "--uts",
                    "--propagation",
                    "private",
                    "sleep",
                    "infinity",
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid = self._holder_pid = self._holder.pid
        (self._run / "holder.pid").write_text(f"{pid}\n")
        # ip and unshare exec each other in the same process: it is ready once it is sleep.
        own_mnt = _procs.ns_id("self", "mnt")
        deadline = time.monotonic() + 10
        while not (_procs.comm(pid) == "sleep" and _procs.ns_id(pid, "mnt") != own_mnt):
            if self._holder.poll() is not None:
                raise HostError(
                    f"lab host {self.name!r}: namespace holder exited "
                    f"({self._holder.returncode}); see {logdir / 'holder.log'}"
                )
            if time.monotonic() > deadline:
                raise HostError(f"lab host {self.name!r}: namespace holder did not start")
            time.sleep(0.01)
        self.run(["hostname", self.netns])

    def _bind_mounts(self) -> None:
        binds = [(self.root_dir / sub, Path(target)) for sub, target in _BINDS]
        binds.append((self.root_dir / "hosts", Path("/etc/hosts")))
        pidfile = self._run / "corosync.pid"
        pidfile.touch()
        if not os.path.exists(_COROSYNC_PIDFILE):
            with contextlib.suppress(FileExistsError):  # another lab host made it meanwhile
                os.close(os.open(_COROSYNC_PIDFILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        binds.append((pidfile, Path(_COROSYNC_PIDFILE)))
        if self._kvm_node().exists():
            binds.append((self._kvm_node(), Path("/dev/kvm")))
        for src, target in binds:
            # /run/libvirt does not exist while the machine's own libvirtd never ran: the
            # empty directory is left on the machine (a root libvirtd would create it too).
            if not target.exists():
                target.mkdir(parents=True)
            self.run(["mount", "--bind", str(src), str(target)])

    def _hugetlbfs_dirs(self) -> list[tuple[str, Path]]:
        """(page size, mount point) for each huge page size the kernel offers."""
        sizes = sorted(p.name.removeprefix("hugepages-").removesuffix("kB")
                       for p in _HUGEPAGE_POOLS.glob("hugepages-*kB"))
        return [(f"{kib}K", self.root_dir / "hugepages" / f"{kib}kB") for kib in sizes]

    def _mount_hugetlbfs(self) -> None:
        """A hugetlbfs per page size, as systemd mounts /dev/hugepages on a real host: libvirt
        finds them when it starts and gives QEMU its huge pages from them (none are reserved
        here unless a test reserves some)."""
        for size, target in self._hugetlbfs_dirs():
            target.mkdir(parents=True, exist_ok=True)
            self.run(["mount", "-t", "hugetlbfs", "-o", f"pagesize={size}", "hugetlbfs",
                      str(target)])

    def _start_daemons(self) -> None:
        self.run(["virtlogd", "-d", "-p", str(self._run / "virtlogd.pid")])
        self._start_virtlockd()
        self._start_libvirtd()

    # -- quorum (corosync) --------------------------------------------------------------

    def corosync_conf(self) -> Path:
        """Where this lab host's corosync.conf is (its directory: the lab has quorum)."""
        return self.root_dir / "corosync" / "corosync.conf"

    def has_quorum(self) -> bool:
        return self.corosync_conf().parent.is_dir()

    def corosync_log(self) -> Path:
        return self.root_dir / "log" / "corosync.log"

    def corosync_state_dir(self) -> Path:
        return self.root_dir / "lib" / "corosync"

    def write_corosync_conf(self, text: str) -> None:
        """Write (or replace) the corosync.conf rendered by corral.ha.corosync_conf."""
        if not self.has_quorum():
            raise WrongState(f"lab host {self.name!r} runs no corosync (a lab without quorum)")
        conf = self.corosync_conf()
        tmp = conf.with_name(conf.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(conf)

    def quorum_start_argv(self) -> list[str] | None:
        """The argv that starts this host's corosync from inside its namespaces (its guard
        runs it to rejoin the membership); None where the lab runs no quorum provider.

        corosync daemonizes: the command returns once it runs (its pid file is the lab
        host's own, see _COROSYNC_PIDFILE), so the caller need not keep a child."""
        return ["corosync", "-c", str(self.corosync_conf())] if self.has_quorum() else None

    def start_quorum(self) -> None:
        """Start corosync where the lab has quorum, its corosync.conf is written and it does
        not run; returns once its pid file names it (bounded). Idempotent, and harmless
        when the host's lease guard starts it at the same moment (the second one exits)."""
        argv = self.quorum_start_argv()
        if argv is None or not self.corosync_conf().exists() \
                or self.daemon_pid("corosync") is not None:
            return
        result = self.run(argv, timeout=30, check=False)
        deadline = time.monotonic() + 10
        while self.daemon_pid("corosync") is None:
            if time.monotonic() > deadline:
                raise HostError(f"corosync of lab host {self.name!r} did not start (exit "
                                f"{result.returncode}: {result.stderr.strip()}); see "
                                f"{self.corosync_log()}")
            time.sleep(0.05)

    def reload_quorum(self) -> None:
        """corosync reads its corosync.conf again (a host added or removed: the nodelist)."""
        if self.daemon_pid("corosync") is not None:
            self.run(["corosync-cfgtool", "-R"], timeout=30)

    def lock_daemon_pidfile(self) -> Path | None:
        """virtlockd's pid file when this lab host uses disk leases (its agent watches it)."""
        return self._run / "virtlockd.pid" if (self.root_dir / "lockspace").exists() else None

    def _start_virtlockd(self) -> None:
        """virtlockd before libvirtd (libvirtd's lockd plugin connects to it at start)."""
        pidfile = self.lock_daemon_pidfile()
        if pidfile is not None and self.daemon_pid("virtlockd") is None:
            self.run(["virtlockd", "-d", "-p", str(pidfile)])

    def _start_libvirtd(self) -> None:
        self.run(["libvirtd", "-d", *self._listen(), "-p", str(self._run / "libvirtd.pid")])

    def _listen(self) -> list[str]:
        """``--listen`` unless libvirtd is to listen with TLS and its agent has not written
        the certificates yet (libvirtd would not start): then it listens on nothing."""
        try:
            pki = Path((self.root_dir / "tls-pki").read_text().strip())
        except OSError:
            return ["--listen"]  # plain TCP, a lab host on its own
        return ["--listen"] if ready(pki) else []

    def listens_with_tls(self) -> bool:
        """Whether libvirtd is configured for TLS and has its certificates."""
        return (self.root_dir / "tls-pki").exists() and self._listen() == ["--listen"]

    def restart_libvirtd(self) -> None:
        """Stop libvirtd and start it again (it reads its configuration and certificates
        only when it starts); its guests keep running and the new one adopts them."""
        pid = self.daemon_pid("libvirtd")
        if pid is not None:
            left = _procs.kill_and_wait([pid])
            if left:
                raise HostError(f"lab host {self.name!r}: libvirtd {pid} survived SIGKILL")
        self._start_libvirtd()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HostError(
                    f"libvirtd of lab host {self.name!r} did not answer in "
                    f"{READY_TIMEOUT_S:.0f} s: {last}; see {self.root_dir / 'log'}"
                )
            try:
                result = self.run(
                    ["virsh", "-c", "qemu:///system", "version"],
                    check=False,
                    timeout=max(remaining, 1),
                )
            except HostError as exc:  # timed out
                last = exc.message
                continue
            if result.returncode == 0:
                return
            last = result.stderr.strip()
            time.sleep(0.1)

    # -- stop --------------------------------------------------------------------------

    def _find_holder(self) -> int | None:
        """The holder: ours, or the one recorded in run/holder.pid if it is in our netns."""
        candidates = [self._holder_pid] if self._holder_pid is not None else []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int((self._run / "holder.pid").read_text()))
        netns_file = Path("/run/netns") / self.netns
        for pid in candidates:
            if not _procs.is_alive(pid) or _procs.comm(pid) != "sleep":
                continue
            try:
                st = netns_file.stat()
            except OSError:
                return pid if pid == self._holder_pid else None
            if _procs.ns_id(pid, "net") == f"net:[{st.st_ino}]":
                return pid
        return None

    # -- another process's lab host, power loss ----------------------------------------

    def attach(self) -> bool:
        """Take over a lab host started by another process (``corral lab``: every command is
        a new process); False when its namespace holder is gone."""
        holder = self._find_holder()
        self._holder_pid = holder
        return holder is not None

    def processes(self) -> list[int]:
        """Every process of the lab host but its holder: those in its network namespace
        (QEMU too: libvirt gives it a mount namespace of its own) or its mount namespace."""
        holder = self._find_holder()
        found = set(_net.netns_pids(self.netns))
        if holder is not None:
            mnt = _procs.ns_id(holder, "mnt")
            if mnt is not None and mnt != _procs.ns_id("self", "mnt"):
                found.update(_procs.pids_in_ns("mnt", mnt))
            found.discard(holder)
        return sorted(p for p in found if _procs.is_alive(p))

    def power_off(self) -> list[int]:
        """SIGKILL every process of the lab host at once, as a power loss: namespaces,
        mounts and disks stay, so :meth:`power_on` can boot it again. Returns the pids
        killed; raises HostError if some survived."""
        victims = self.processes()
        left = _procs.kill_and_wait(victims)
        if left:
            raise HostError(f"lab host {self.name!r}: processes survived SIGKILL: {left}")
        return victims

    def power_on(self) -> None:
        """Start virtlogd and libvirtd where they do not run (after :meth:`power_off`, or a
        daemon killed alone) and wait for libvirtd."""
        if not self.attach():
            raise WrongState(f"lab host {self.name!r} has no namespaces: start it instead")
        if not self.processes():
            # A power loss: /run is a tmpfs on a real host and comes back empty (libvirt's
            # domain status files too, so libvirtd finds its guests shut off). Not after a
            # daemon was killed alone: its guests still run and libvirtd must find them.
            for sub in ("run/libvirt", "run/openvswitch"):
                for entry in (self.root_dir / sub).glob("*"):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        if self.daemon_pid("virtlogd") is None:
            self.run(["virtlogd", "-d", "-p", str(self._run / "virtlogd.pid")])
        self._start_virtlockd()
        if self.daemon_pid("libvirtd") is None:
            self._start_libvirtd()
        self._wait_ready()
        self.start_quorum()

    def daemon_pid(self, daemon: str) -> int | None:
        """The live pid of ``virtlogd``, ``virtlockd``, ``libvirtd`` or ``corosync`` (pid
        file in run/)."""
        try:
            pid = int((self._run / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _procs.is_alive(pid) and _procs.comm(pid) == daemon else None

    def stop(self) -> None:
        """Kill everything in the lab host, unmount, remove the veth and the netns.

        Idempotent, works on a half-built lab host and on one left behind by another process
        (found by name), and never raises: what it cannot clean is logged as a warning.
        """
        t0 = time.monotonic()
        holder = None
        try:
            holder = self._find_holder()
            left = _procs.kill_and_wait(set(self.processes()))
            if left:
                log.warning("lab host %s: processes survived SIGKILL: %s", self.name, left)
        except Exception:
            log.warning("lab host %s: killing its processes failed", self.name, exc_info=True)
        if holder is not None:
            self._unmount(holder)
            left = _procs.kill_and_wait([holder])
            if left:
                log.warning("lab host %s: holder %s survived SIGKILL", self.name, holder)
        if self._holder is not None:
            try:
                self._holder.wait(timeout=5)
            except Exception:
                log.warning("lab host %s: holder not reaped", self.name, exc_info=True)
        self._holder = None
        self._holder_pid = None
        _net.disconnect_router(self.name)
        _net.delete(self.netns, self.veth)
        shutil.rmtree(self._run, ignore_errors=True)
        log.info("lab host %s stopped in %.2f s", self.name, time.monotonic() - t0)

    def _unmount(self, holder: int) -> None:
        """Unmount the binds (they would go with the namespace; this makes it explicit)."""
        if _procs.ns_id(holder, "mnt") in (None, _procs.ns_id("self", "mnt")):
            return  # never unmount anything in the machine's own mount namespace
        targets = [target for _, target in _BINDS] + ["/etc/hosts", "/dev/kvm",
                                                         _COROSYNC_PIDFILE]
        targets += [str(target) for _, target in self._hugetlbfs_dirs()]
        for target in reversed(targets):
            try:
                subprocess.run(
                    ["nsenter", f"--target={holder}", "--mount", "--", "umount", "--lazy", target],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
            except Exception:
                log.warning("lab host %s: umount %s failed", self.name, target, exc_info=True)

    # -- context manager ---------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LabHost(name={self.name!r}, index={self.index}, address={self.address!r})"
