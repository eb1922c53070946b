"""Storage fencing of an RBD image: every Ceph client that has it open is blocklisted
(``ceph osd blocklist add ADDR EXPIRE``), so a QEMU on a host that is only cut off can no
longer write to it (its requests then fail with errno 108, ESHUTDOWN) before the VM starts
on another host.

The clients of an image are its watchers (``rbd status``: librbd watches the header of an
image it opened for writing) and the holder of its exclusive lock (``rbd lock ls``: still
recorded when a cut-off client's watch has timed out, about 30 s after it lost Ceph).
Blocklisting is idempotent (a second ``add`` renews the entry) and takes effect at once: the
OSDs drop the client's watch, and librbd on the new host then breaks its stale lock.
"""

from __future__ import annotations

import json
import re
from typing import Any

from corral.agent.pools import Pool
from corral.agent.pools.rbd import RbdPool
from corral.agent_api.rbd_fencing import Fenced
from corral.errors import Conflict, HostError
from corral.validation import validate_name, validate_vm_name

# A client's address as Ceph prints it: IPv4 or [IPv6], port, nonce (``10.0.0.5:0/123456``),
# maybe typed (``v1:``, ``any:``). Checked before it becomes an argument of ``ceph``.
_ADDRESS = re.compile(r"(?:(?:v1|v2|any):)?(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\])"
                      r":\d{1,5}/\d{1,20}")


def rbd_pool(pool: Pool) -> RbdPool:
    if not isinstance(pool, RbdPool):
        raise Conflict(f"pool {pool.spec.name} is a {pool.spec.type} pool: only the clients "
                       "of RBD images (rbd pools) can be fenced", field="pool")
    return pool


def volume_image(pool: RbdPool, volume: str) -> str:
    return f"{pool.pool}/{validate_name(volume, 'volume')}"


def root_image(pool: RbdPool, vm: str) -> str:
    """A VM's root disk in the pool (corral.agent.pools.roots: ``vm.NAME``)."""
    return f"{pool.pool}/vm.{validate_vm_name(vm, 'vm')}"


def clients(pool: RbdPool, image: str) -> list[str]:
    """The addresses of the Ceph clients that have ``image`` open (NotFound: no image)."""
    status: Any = json.loads(pool._rbd("status", "--format", "json", image,
                                       what=f"list the watchers of RBD image {image}"))
    locks: Any = json.loads(pool._rbd("lock", "ls", "--format", "json", image,
                                      what=f"list the locks of RBD image {image}"))
    found = [str(w.get("address", "")) for w in status.get("watchers", [])]
    found += [str(lk.get("address", "")) for lk in locks]
    bad = [a for a in found if not _ADDRESS.fullmatch(a)]
    if bad:  # a client we cannot name is one we cannot fence: never pass over it
        raise HostError(f"RBD image {image} has a client whose address is unreadable: "
                        f"{bad[0]!r}")
    return sorted(set(found))


def fence(pool: RbdPool, image: str, expire_s: int) -> Fenced:
    """Blocklist every client of ``image`` for ``expire_s`` seconds; the addresses."""
    addresses = clients(pool, image)
    for address in addresses:
        pool._mapped(["ceph", "-c", pool.conf, "--connect-timeout", "15", "osd", "blocklist",
                      "add", address, str(expire_s)],
                     f"blocklist Ceph client {address} of RBD image {image}", 60)
    return Fenced(image=image, addresses=addresses, expire_s=expire_s)
