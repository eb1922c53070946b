"""Storage pools of one host: dir, shared (a directory every host sees) and Ceph RBD.

The engine tells the agent about a pool (``PUT /v1/pools/NAME``); the agent keeps its spec
in ``STATE/pools/NAME.json`` so it knows its pools across restarts (and, at start, removes
what jobs of an earlier agent left in its dir pools: :meth:`PoolRegistry.sweep_leftovers`),
and opens the driver (:mod:`.dir`, :mod:`.shared`, :mod:`.rbd`, all following
:class:`.base.Pool`) for each call.
The routes are in :mod:`.routes`; hot-plug of volumes into domains is
:mod:`corral.agent.hypervisor.disks`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from corral.agent.pools.base import Pool, PoolSpec
from corral.agent.pools.dir import DirPool, leftover_parts
from corral.agent.pools.rbd import RbdPool
from corral.agent.pools.shared import SharedPool
from corral.agent.storage import remove_leftover
from corral.agent_api.pools import PoolSetup
from corral.errors import InvalidInput, NotFound
from corral.safepaths import PathPolicy
from corral.validation import validate_name

log = logging.getLogger(__name__)

__all__ = ["Pool", "PoolRegistry", "PoolSpec", "open_pool"]

_DRIVERS: dict[str, type[DirPool] | type[SharedPool] | type[RbdPool]] = {
    "dir": DirPool, "shared": SharedPool, "rbd": RbdPool,
}


def open_pool(spec: PoolSpec, reserved: tuple[Path, ...] = ()) -> Pool:
    validate_name(spec.name, "pool")
    driver = _DRIVERS.get(spec.type)
    if driver is None:
        raise InvalidInput(f"pool type {spec.type!r} is not one of dir, shared, rbd",
                           field="type")
    pool: Pool = driver(spec, reserved)
    return pool


class PoolRegistry:
    """The pools this host knows, by name (spec files under ``state_dir``)."""

    def __init__(self, state_dir: Path, reserved: tuple[Path, ...] = (),
                 protected: tuple[Path, ...] = (), storage_root: Path | None = None) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.reserved = reserved
        # corral.safepaths: a new pool is not in ``protected`` (the agent's state dir) unless
        # below STORAGE/pools, nor inside or around another pool; STORAGE itself is the
        # default pool's.
        self.protected = protected
        self.storage_root = storage_root

    def _check_path(self, spec: PoolSpec) -> None:
        if spec.ceph_conf:
            PathPolicy(protected=self.protected).check_config(spec.ceph_conf, "ceph_conf")
        if not spec.path or spec.type not in ("dir", "shared"):
            return
        if not spec.path.startswith("/") or ".." in Path(spec.path).parts:
            return  # the driver refuses it, saying why
        if self.storage_root is not None and Path(spec.path) == self.storage_root:
            return  # the default pool
        others = tuple(Path(o.path) for o in self._specs() if o.path and o.name != spec.name)
        homes = () if self.storage_root is None else (self.storage_root / "pools",)
        PathPolicy(protected=self.protected, pools=others, pool_homes=homes).check_pool(
            spec.path, "path")

    def _specs(self) -> list[PoolSpec]:
        found = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                found.append(PoolSpec(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return found

    def _file(self, name: str) -> Path:
        return self.dir / f"{validate_name(name, 'pool')}.json"

    def check(self, spec: PoolSpec) -> None:
        pool = open_pool(spec, self.reserved)
        self._check_path(spec)  # before the driver looks at the path or runs a tool on it
        pool.check()

    def ensure(self, spec: PoolSpec, marker: str = "write") -> PoolSetup:
        """Set the pool up (idempotent) and remember it; its stats and driver facts."""
        pool = open_pool(spec, self.reserved)
        self._check_path(spec)
        extra = pool.setup(marker)
        tmp = self._file(spec.name).with_suffix(".part")
        tmp.write_text(json.dumps(spec.to_dict()) + "\n")
        os.replace(tmp, self._file(spec.name))
        return PoolSetup.model_validate({**pool.stats().model_dump(), **extra})

    def get(self, name: str) -> Pool:
        path = self._file(name)
        if not path.exists():
            raise NotFound(f"pool {name} is not set up on this host", pool_missing=True)
        return open_pool(PoolSpec(**json.loads(path.read_text())), self.reserved)

    def sweep_leftovers(self) -> list[Path]:
        """Remove the partial files of jobs that died with an earlier agent from this host's
        dir pools (call at start, before any job runs). Shared pools are left alone: another
        host's agent may be writing there now; RBD ``.part`` images are removed by the next
        attempt of their job."""
        removed = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                spec = PoolSpec(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("pool spec %s unreadable: %s", path, exc)
                continue
            if spec.type != "dir" or not spec.path:
                continue
            for part in leftover_parts(Path(spec.path)):
                if remove_leftover(part, f"left in pool {spec.name} by a job of an earlier agent"):
                    removed.append(part)
        return removed

    def paths(self) -> list[Path]:
        """The directories of this host's dir and shared pools (corral.safepaths)."""
        return [Path(spec.path) for spec in self._specs() if spec.path]

    def forget(self, name: str) -> bool:
        """Tear the pool down and forget it; False when this host had no such pool."""
        path = self._file(name)
        if not path.exists():
            return False
        self.get(name).teardown()
        path.unlink(missing_ok=True)
        return True


def host_registry(state_dir: Path, storage_root: Path) -> PoolRegistry:
    """The pools of this agent (``state_dir/pools``); the agent's own image, VM-disk and build
    directories under ``storage_root`` are never a pool's."""
    reserved = tuple(storage_root / sub for sub in ("images", "vms", "build"))
    return PoolRegistry(state_dir / "pools", reserved, protected=(state_dir,),
                        storage_root=storage_root)
