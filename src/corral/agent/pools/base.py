"""What every pool driver is: the spec it is built from, its answers, and the Pool protocol."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from corral.agent import children
from corral.agent_api.pools import PoolStats, VolumeInfo  # the drivers' answers, as sent
from corral.errors import HostError, InsufficientResources, InvalidInput, Unavailable
from corral.validation import validate_name

POOL_TYPES = ("dir", "shared", "rbd")
FORMATS = ("qcow2", "raw")
MIB = 1 << 20


@dataclass(frozen=True)
class PoolSpec:
    """A pool as the engine describes it to an agent (kept in the agent's state dir)."""

    name: str
    type: str  # dir | shared | rbd
    id: str = ""  # the engine's id of the pool: written in a shared pool's marker file
    path: str | None = None  # dir, shared
    ceph_conf: str | None = None  # rbd
    ceph_pool: str | None = None  # rbd

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Pool(Protocol):
    """A storage pool on this host. Every method is idempotent where it can be (an engine
    that crashed re-runs its operation); a failed create leaves no half-written volume."""

    spec: PoolSpec

    def check(self) -> None:
        """Dry run of ``setup``: raise a clear error if the pool cannot be used here."""

    def setup(self, marker: str = "write") -> dict[str, Any]:
        """Make the pool usable; extra facts for the engine (an rbd pool's monitors)."""

    def teardown(self) -> None:
        """Undo ``setup`` (volumes are the engine's to delete first)."""

    def stats(self) -> PoolStats: ...

    def volumes(self) -> list[VolumeInfo]: ...

    def volume(self, name: str) -> VolumeInfo | None: ...

    def create_volume(self, name: str, size: int, fmt: str) -> VolumeInfo: ...

    def resize_volume(self, name: str, size: int) -> VolumeInfo: ...

    def delete_volume(self, name: str) -> bool: ...


# -- checks shared by the drivers ------------------------------------------------------------

def check_volume_request(name: str, size: int, fmt: str) -> None:
    validate_name(name, "volume")
    if fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r} is not one of {', '.join(FORMATS)}", field="format")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidInput("size must be a positive number of bytes", field="size")


def round_mib(size: int) -> int:
    return -(-size // MIB) * MIB


def check_room(pool: Pool, need: int, what: str) -> None:
    """Refuse before writing anything: a volume may not be larger than the pool's free space
    (thin volumes may, together, promise more than the pool holds; one alone may not)."""
    free = pool.stats().available
    if need > free:
        raise InsufficientResources(
            f"pool {pool.spec.name} is too full for {what}: it needs {need >> 20} MiB, "
            f"{free >> 20} MiB free",
            field="size", pool=pool.spec.name, needed=need, available=free,
        )


def check_grow(info: VolumeInfo, size: int) -> None:
    if size < info.capacity:
        raise InvalidInput(
            f"volume {info.name} is {info.capacity >> 20} MiB; shrinking to {size >> 20} MiB "
            "would cut off data, and volumes only grow", field="size")


def run(argv: list[str], what: str, timeout: float = 120, package: str = "") -> str:
    """Run a host tool; a missing tool is Unavailable, a failure HostError with its stderr."""
    try:
        proc = children.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        hint = f" (apt-get install {package})" if package else ""
        raise Unavailable(f"{what}: {argv[0]} is not installed{hint}") from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{what}: {argv[0]} did not finish within {timeout:g} s") from exc
    if proc.returncode != 0:
        raise HostError(f"{what}: {proc.stderr.strip()[-500:] or f'exit {proc.returncode}'}",
                        returncode=proc.returncode)
    return proc.stdout
