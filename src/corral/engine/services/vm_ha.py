"""A VM's high-availability settings (``vm create|set --ha``, docs/ha.md): the check that an
HA VM can run on another host, and the record of what HA did to it.

An HA VM is restarted on a surviving host when its host fails, so every disk it has must be
reachable from the other hosts: its root disk and its volumes on shared or rbd pools (the
rule live migration applies, corral.engine.services.vm_migration). A root disk in the host's
own storage (pool ``default``) or in a dir pool dies with its host, so ``--ha`` is refused
for it (422 naming ``ha``), and so is attaching a dir-pool volume to an HA VM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session

from corral.engine.context import EngineContext
from corral.engine.db.models import Host, StoragePool, Vm, Volume
from corral.engine.operations import OpContext
from corral.engine.services import image_copies, vm_design
from corral.engine.services.vm_migration import SHARED_POOL_TYPES
from corral.errors import CorralError, InvalidInput

log = logging.getLogger(__name__)

_HINT = ("an HA VM is restarted on another host when its host fails: create it with "
         "`--pool SHARED_POOL` (a shared or rbd pool) and keep its volumes on such pools")


def host_bound(root: StoragePool | None, volumes: Sequence[tuple[str, str, str]]) -> list[str]:
    """The disks only one host can reach: ``root`` None is the host's own storage dir;
    ``volumes``: (volume, pool, pool type) of the attached ones."""
    out: list[str] = []
    if root is None:
        out.append("its root disk (in the host's own storage, pool default)")
    elif root.type not in SHARED_POOL_TYPES:
        out.append(f"its root disk (in dir pool {root.name})")
    out.extend(f"volume {pool}/{vol}" for vol, pool, kind in volumes
               if kind not in SHARED_POOL_TYPES)
    return out


def check_movable(name: str, root: StoragePool | None,
                  volumes: Sequence[tuple[str, str, str]] = ()) -> None:
    """InvalidInput (422, field ``ha``) when VM ``name`` has a disk only its host reaches."""
    bound = host_bound(root, volumes)
    if bound:
        raise InvalidInput(f"VM {name} cannot be HA with {', '.join(bound)}: {_HINT}",
                           field="ha")


def check_vm(s: Session, vm: Vm) -> None:
    """:func:`check_movable` for an existing VM (its root disk and attached volumes)."""
    rows = (s.query(Volume.name, StoragePool.name, StoragePool.type)
            .join(StoragePool, Volume.pool_id == StoragePool.id)
            .filter(Volume.vm_id == vm.id))
    check_movable(vm.name, vm_design.root_pool(s, vm),
                  [(str(v), str(p), str(k)) for v, p, k in rows])


def spread_image(ctx: EngineContext, op: OpContext, vm_id: str) -> None:
    """An HA VM's image onto every other host that is up, so that its recovery there needs
    nothing from the host that failed (image_copies copies only what a host lacks: with the
    base in a shared pool, a direct-boot image's kernel and initrd). A host it cannot reach
    is named in the operation's message, not an error: the VM runs; its recovery on that host
    would fail and be tried on another."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None or not vm.ha or vm.host_id is None:
            return
        others = [(h.id, h.name) for h in s.query(Host).filter(
            Host.id != vm.host_id, Host.status == "up").order_by(Host.name)]
    missed = []
    for i, (host_id, name) in enumerate(others):
        try:
            image_copies.ensure_for_vm(ctx, op, vm_id, span=(90 + i * 9 // len(others),) * 2,
                                       host_id=host_id)
        except CorralError as exc:
            log.warning("HA VM %s: its image is not on host %s: %s", vm_id, name, exc)
            missed.append(name)
    if missed:
        op.progress(99, f"HA: its image could not be copied to {', '.join(missed)}")
