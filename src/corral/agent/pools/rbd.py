"""A Ceph RBD pool: every volume is an RBD image ``CEPH_POOL/NAME`` (raw, thin, replicated
by Ceph), driven by the ``rbd`` and ``ceph`` CLIs of ceph-common with the pool's ceph.conf.

QEMU opens the images itself (librbd, through libvirt ``<disk type='network'>``): ``setup``
answers the monitors' addresses (``ceph mon dump``) that the engine writes into the domain.
Authentication: none yet (``auth_* = none`` clusters); cephx keys are a later seam (a
``keyring``/``user`` in the spec and a libvirt secret for QEMU).

VM root disks in the pool (``vm create --pool``), RBD layering for images, templates and
linked clones (``rbd snap create``/``protect``, ``rbd clone``, ``rbd children``): see
:mod:`corral.agent.pools.roots`. Its images are named with a dot (``img.IMAGE``, ``vm.NAME``,
``base.SRC.NEW``), which no volume name has.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from corral.agent.pools.base import (
    PoolSpec,
    check_grow,
    check_room,
    check_volume_request,
    round_mib,
    run,
)
from corral.agent_api.pools import PoolStats, VolumeInfo
from corral.errors import (
    Conflict,
    CorralError,
    HostError,
    InsufficientResources,
    InvalidInput,
    NotFound,
    Unavailable,
)
from corral.validation import validate_name

DEFAULT_CONF = "/etc/ceph/ceph.conf"
# Never wait minutes for a cluster that does not answer (librados waits 300 s by default).
_TIMEOUTS = ["--client_mount_timeout", "15", "--rados_mon_op_timeout", "30",
             "--rados_osd_op_timeout", "60"]
_ENOENT, _EBUSY, _EEXIST, _ENOSPC, _EDQUOT = 2, 16, 17, 28, 122


class RbdPool:
    def __init__(self, spec: PoolSpec, reserved: tuple[Path, ...] = ()) -> None:
        if not spec.ceph_pool:
            raise InvalidInput(f"rbd pool {spec.name} needs ceph_pool", field="ceph_pool")
        self.spec = spec
        self.conf = spec.ceph_conf or DEFAULT_CONF
        self.pool = spec.ceph_pool

    # -- the CLIs ------------------------------------------------------------------------
    def _rbd(self, *args: str, what: str, timeout: float = 120) -> str:
        return self._mapped(["rbd", "-c", self.conf, *_TIMEOUTS, *args], what, timeout)

    def _ceph(self, *args: str, what: str) -> Any:
        out = self._mapped(["ceph", "-c", self.conf, "--connect-timeout", "15", *args,
                            "--format", "json"], what, 60)
        return json.loads(out)

    def _mapped(self, argv: list[str], what: str, timeout: float) -> str:
        try:
            return run(argv, what, timeout=timeout, package="ceph-common")
        except HostError as exc:
            code = exc.details.get("returncode")
            if code == _ENOENT:
                raise NotFound(exc.message) from exc
            if code == _EBUSY:
                raise Conflict(f"{exc.message} (an RBD image still in use by a VM?)") from exc
            if code in (_ENOSPC, _EDQUOT):
                raise InsufficientResources(f"{exc.message} (the Ceph pool is full)") from exc
            raise

    def _image(self, name: str) -> str:
        return f"{self.pool}/{validate_name(name, 'volume')}"

    # -- the pool ------------------------------------------------------------------------
    def check(self) -> None:
        if not Path(self.conf).is_file():
            raise InvalidInput(f"ceph_conf {self.conf} is not a file on this host",
                               field="ceph_conf")
        try:
            pools = self._ceph("osd", "pool", "ls", what=f"list the Ceph pools ({self.conf})")
        except HostError as exc:
            raise Unavailable(f"cannot reach the Ceph cluster of {self.conf}: {exc.message}") \
                from exc
        if self.pool not in pools:
            raise NotFound(f"Ceph pool {self.pool} does not exist (create it: ceph osd pool "
                           f"create {self.pool}; rbd pool init {self.pool})", field="ceph_pool")

    def setup(self, marker: str = "write") -> dict[str, Any]:
        self.check()
        return {"monitors": self.monitors()}

    def monitors(self) -> list[list[Any]]:
        """[[address, port], ...] of the monitors, their v1 address where they have one."""
        dump = self._ceph("mon", "dump", what="read the Ceph monitor map")
        found: list[list[Any]] = []
        for mon in dump.get("mons", []):
            addrs = mon.get("public_addrs", {}).get("addrvec", [])
            chosen = next((a for a in addrs if a.get("type") == "v1"), None) or \
                next(iter(addrs), None)
            if chosen is None:
                continue
            host, _, port = str(chosen["addr"]).rpartition(":")
            found.append([host.strip("[]"), int(port)])
        if not found:
            raise HostError(f"the Ceph cluster of {self.conf} lists no monitor address")
        return found

    def teardown(self) -> None:
        """Nothing to undo: the Ceph pool is the cluster administrator's."""

    def stats(self) -> PoolStats:
        df = self._ceph("df", what="read the Ceph pool usage")
        for pool in df.get("pools", []):
            if pool.get("name") == self.pool:
                st = pool.get("stats", {})
                stored, free = int(st.get("stored", 0)), int(st.get("max_avail", 0))
                return PoolStats(capacity=stored + free, allocation=stored, available=free)
        raise NotFound(f"Ceph pool {self.pool} not found in `ceph df`")

    # -- volumes (RBD images) -------------------------------------------------------------
    def _infos(self, image: str | None = None) -> list[VolumeInfo]:
        args = ["du", "--format", "json"]
        args += [self._image(image)] if image else ["-p", self.pool]
        du = json.loads(self._rbd(*args, what="read RBD image usage"))
        out = []
        for img in du.get("images", []):
            if img.get("snapshot"):
                continue
            name = str(img["name"])
            out.append(VolumeInfo(name=name, format="raw", capacity=int(img["provisioned_size"]),
                                  allocation=int(img.get("used_size") or 0),
                                  source=f"{self.pool}/{name}"))
        return out

    def volumes(self) -> list[VolumeInfo]:
        return sorted(self._infos(), key=lambda v: v.name)

    def volume(self, name: str) -> VolumeInfo | None:
        try:
            found = self._infos(name)
        except NotFound:
            return None
        return found[0] if found else None

    def create_volume(self, name: str, size: int, fmt: str) -> VolumeInfo:
        check_volume_request(name, size, fmt)
        if fmt != "raw":
            raise InvalidInput("RBD images are raw: an rbd pool holds raw volumes only",
                               field="format")
        size = round_mib(size)
        existing = self.volume(name)
        if existing is not None:
            if existing.capacity == size:
                return existing  # a re-run of our own create
            raise Conflict(f"Ceph pool {self.pool} already holds an RBD image {name}",
                           field="name")
        check_room(self, size, f"volume {name}")
        try:
            self._rbd("create", "--size", f"{size}B", self._image(name),
                      what=f"create RBD image {name}")
        except CorralError as exc:
            if exc.details.get("returncode") != _EEXIST:  # never remove another's image
                with contextlib.suppress(CorralError):
                    self.delete_volume(name)  # nothing half-made (rbd create may fail late)
            raise
        info = self.volume(name)
        if info is None:
            raise HostError(f"RBD image {name} vanished right after it was created")
        return info

    def resize_volume(self, name: str, size: int) -> VolumeInfo:
        info = self.volume(name)
        if info is None:
            raise NotFound(f"volume {name} not found in pool {self.spec.name}")
        size = round_mib(size)
        check_grow(info, size)
        if size == info.capacity:
            return info
        check_room(self, size - info.capacity, f"growing volume {name}")
        self._rbd("resize", "--no-progress", "--size", f"{size}B", self._image(name),
                  what=f"resize RBD image {name}")
        new = self.volume(name)
        assert new is not None
        return new

    def delete_volume(self, name: str) -> bool:
        try:
            self._rbd("rm", "--no-progress", self._image(name), what=f"delete RBD image {name}")
        except NotFound:
            return False
        return True
