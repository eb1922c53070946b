"""Storage pools of one host: dir, shared (a directory every host sees) and Ceph RBD.

The engine tells the agent about a pool (``PUT /v1/pools/NAME``); the agent keeps its spec
in ``STATE/pools/NAME.json`` so it knows its pools across restarts, and opens the driver
(:mod:`.dir`, :mod:`.shared`, :mod:`.rbd`, all following :class:`.base.Pool`) for each call.
The routes are in :mod:`.routes`; hot-plug of volumes into domains is
:mod:`corral.agent.hypervisor.disks`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from corral.agent.pools.base import Pool, PoolSpec
from corral.agent.pools.dir import DirPool
from corral.agent.pools.rbd import RbdPool
from corral.agent.pools.shared import SharedPool
from corral.agent_api.pools import PoolSetup
from corral.errors import InvalidInput, NotFound
from corral.validation import validate_name

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

    def __init__(self, state_dir: Path, reserved: tuple[Path, ...] = ()) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.reserved = reserved

    def _file(self, name: str) -> Path:
        return self.dir / f"{validate_name(name, 'pool')}.json"

    def check(self, spec: PoolSpec) -> None:
        open_pool(spec, self.reserved).check()

    def ensure(self, spec: PoolSpec, marker: str = "write") -> PoolSetup:
        """Set the pool up (idempotent) and remember it; its stats and driver facts."""
        pool = open_pool(spec, self.reserved)
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
    return PoolRegistry(state_dir / "pools", reserved)
