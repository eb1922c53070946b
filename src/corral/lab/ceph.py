"""A real, small Ceph cluster: one mon, one mgr, three OSDs on bluestore files (the tests',
`corral lab up --storage rbd`).

Started from the Debian packages (ceph-mon, ceph-mgr, ceph-osd, ceph-common; installed by
scripts/install-deps.sh, nothing is installed here), inside a lab host's namespaces (or any
:class:`Place` with ``run``/``popen``/``address``, e.g. the lab engine's network namespace) when
one is given (the daemons listen on the lab host's own address, so the node's agent and QEMU
inside it, and the tests outside it, all reach the cluster; nothing leaves the machine), else
on 127.0.0.1. Authentication is off (``auth_* = none``), pools are replicated three times
across the three OSDs (``osd_crush_chooseleaf_type = 0``: one host, replicas per OSD).

Kept small in memory and disk: bluestore on sparse files of :data:`OSD_SIZE` bytes, a fixed
32 MiB cache per OSD, one op shard. Everything lives in ``root`` (config, mon/mgr/osd data,
logs, sockets); :meth:`CephCluster.stop` kills the daemons and removes it, also after a
failed start.

    with CephCluster(tmp / "ceph", host) as ceph:
        ceph.create_pool("rbd")
        ceph.cli("df")            # `ceph -c CONF df` inside the lab host
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from corral.errors import HostError

log = logging.getLogger(__name__)

OSDS = 3
OSD_SIZE = 3 << 30  # sparse bluestore block file of each OSD
START_TIMEOUT_S = 120.0
MON_PORT_V2, MON_PORT_V1 = 3300, 6789


class Place(Protocol):
    """Where the daemons run: a LabHost, or corral.lab.netns.NetnsPlace."""

    address: str

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60,
            check: bool = True, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]: ...

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]: ...


class CephCluster:
    def __init__(self, root: Path, host: Place | None = None) -> None:
        self.root = root.absolute()
        self.host = host
        self.address = host.address if host is not None else "127.0.0.1"
        self.fsid = str(uuid.uuid4())
        self.conf = self.root / "ceph.conf"
        self._procs: list[subprocess.Popen[str]] = []

    # -- commands (inside the lab host when there is one) ------------------------------

    def _popen(self, argv: list[str], logname: str) -> subprocess.Popen[str]:
        logf = open(self.root / "log" / logname, "a")  # noqa: SIM115 - closed after Popen
        try:
            if self.host is not None:
                proc = self.host.popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            else:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        finally:
            logf.close()
        self._procs.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float = 60) -> str:
        """Run a command (in the lab host); its stdout, or HostError with stderr."""
        if self.host is not None:
            proc = self.host.run(argv, timeout=timeout, check=False)
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        if proc.returncode != 0:
            raise HostError(f"{' '.join(argv)} failed ({proc.returncode}): "
                                 f"{proc.stderr.strip()[-1500:]}")
        return proc.stdout

    def cli(self, *args: str, timeout: float = 60) -> str:
        """``ceph -c CONF ARGS`` (as the cluster's admin; auth is off)."""
        return self.run(["ceph", "-c", str(self.conf), "--connect-timeout", "20", *args],
                        timeout=timeout)

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--format", "json"))

    def rbd(self, *args: str) -> str:
        return self.run(["rbd", "-c", str(self.conf), *args])

    # -- start -------------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        try:
            self._prepare()
            self._start_mon()
            self._start_mgr()
            for i in range(OSDS):
                self._start_osd(i)
            self._wait_osds_up()
        except BaseException:
            log.warning("ceph: start failed, cleaning up; logs were in %s", self.root / "log")
            self._dump_logs()
            self.stop()
            raise
        log.info("ceph cluster started in %.1f s", time.monotonic() - t0)

    def _prepare(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        for sub in ("log", "run", "mon", "mgr", "osd"):
            (self.root / sub).mkdir(parents=True)
        r = self.root
        self.conf.write_text(f"""\
[global]
fsid = {self.fsid}
mon_host = [v2:{self.address}:{MON_PORT_V2},v1:{self.address}:{MON_PORT_V1}]
public_network = {self.address}/32
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = {r}/run
admin_socket = {r}/run/$name.asok
pid_file = {r}/run/$name.pid
log_file = {r}/log/$name.log
mon_cluster_log_file = {r}/log/cluster.log
crash_dir = {r}/crash
keyring = {r}/keyring
ms_bind_ipv6 = false
osd_pool_default_size = 3
osd_pool_default_min_size = 2
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_delete = true
mon_data_avail_warn = 1
mon_warn_on_pool_no_redundancy = false
mgr_initial_modules = status

[mon]
mon_data = {r}/mon/$name

[mgr]
mgr_data = {r}/mgr/$name

[osd]
osd_data = {r}/osd/$id
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = {OSD_SIZE}
bluestore_cache_autotune = false
bluestore_cache_size = 33554432
osd_memory_target = 939524096
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 1
osd_max_object_name_len = 256
osd_max_object_namespace_len = 64
""")
        keyring = self.root / "keyring"
        self.run(["ceph-authtool", "--create-keyring", str(keyring), "--gen-key", "-n", "mon.",
                  "--cap", "mon", "allow *"])
        monmap = self.root / "monmap"
        self.run(["monmaptool", "--create", "--fsid", self.fsid, "--addv", "a",
                  f"[v2:{self.address}:{MON_PORT_V2},v1:{self.address}:{MON_PORT_V1}]",
                  str(monmap)])
        self.run(["ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(monmap),
                  "--keyring", str(keyring)])

    def _start_mon(self) -> None:
        self._popen(["ceph-mon", "-c", str(self.conf), "-f", "-i", "a"], "mon.a.out")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(HostError):
                self.cli("mon", "stat", timeout=15)
                return
            self._check_alive("mon")
            if time.monotonic() > deadline:
                raise HostError("ceph-mon did not answer")
            time.sleep(0.5)

    def _start_mgr(self) -> None:
        (self.root / "mgr" / "mgr.x").mkdir(parents=True, exist_ok=True)
        self._popen(["ceph-mgr", "-c", str(self.conf), "-f", "-i", "x"], "mgr.x.out")

    def _start_osd(self, index: int) -> None:
        osd_uuid = str(uuid.uuid4())
        osd_id = self.cli("osd", "new", osd_uuid).strip()
        if osd_id != str(index):
            raise HostError(f"ceph gave osd id {osd_id!r}, expected {index}")
        (self.root / "osd" / osd_id).mkdir()
        self.run(["ceph-osd", "-c", str(self.conf), "-i", osd_id, "--mkfs",
                  "--osd-uuid", osd_uuid], timeout=120)
        self._popen(["ceph-osd", "-c", str(self.conf), "-f", "-i", osd_id], f"osd.{osd_id}.out")

    def _wait_osds_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            stat = self.cli_json("osd", "stat")
            if stat.get("num_up_osds") == OSDS and stat.get("num_in_osds") == OSDS:
                return
            self._check_alive("osd")
            if time.monotonic() > deadline:
                raise HostError(f"OSDs not up after {START_TIMEOUT_S:g} s: {stat}")
            time.sleep(0.5)

    def _check_alive(self, what: str) -> None:
        for proc in self._procs:
            if proc.poll() is not None:
                argv = proc.args if isinstance(proc.args, list) else [proc.args]
                raise HostError(f"a ceph daemon ({' '.join(map(str, argv[-3:]))}) exited "
                                f"with {proc.returncode} while waiting for {what}")

    def _dump_logs(self) -> None:
        for f in sorted((self.root / "log").glob("*")):
            with contextlib.suppress(OSError):
                log.warning("--- %s ---\n%s", f.name, f.read_text(errors="replace")[-2000:])

    # -- pools -------------------------------------------------------------------------

    def create_pool(self, name: str, pg_num: int = 8) -> None:
        """A replicated (size 3) pool for RBD images, waited until its PGs are active."""
        self.cli("osd", "pool", "create", name, str(pg_num), str(pg_num), "replicated")
        self.cli("osd", "pool", "set", name, "size", "3")
        self.cli("osd", "pool", "application", "enable", name, "rbd")
        self.wait_active()

    def wait_active(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pg = self.cli_json("pg", "stat")
            total = int(pg.get("num_pgs") or pg.get("pg_summary", {}).get("num_pgs") or 0)
            states = pg.get("num_pg_by_state") or pg.get("pg_summary", {}).get(
                "num_pg_by_state") or []
            active = sum(int(s["num"]) for s in states if "active" in s["name"].split("+"))
            if total and active == total:
                return
            if time.monotonic() > deadline:
                raise HostError(f"PGs not active after {timeout:g} s: {pg}")
            time.sleep(0.5)

    # -- stop --------------------------------------------------------------------------

    def stop(self) -> None:
        """Kill the daemons and remove every file; never raises."""
        for proc in self._procs:
            with contextlib.suppress(Exception):
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except Exception:
                with contextlib.suppress(Exception):
                    proc.kill()
                    proc.wait(timeout=10)
        self._procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
