"""Images across hosts: a VM placed on a host that lacks its image gets the image first.

Images are cluster-wide rows, but their files live on hosts (``images/NAME.*``, where they
were imported or built): the host's files are the record of what it holds (asked, never
mirrored in a table that could drift from the disk). When a VM is created on a host:

- the host has the image file (its size the row's): nothing to do;
- the VM's root disk goes to a shared or rbd pool that already holds the image's base
  (another host put it there): nothing is copied but a direct-boot image's kernel, initrd
  and cmdline, which QEMU reads from the host itself;
- otherwise the files are copied from a host that has them. There is no engine-side image
  store, and agents accept only the engine's certificate (never each other's), so the
  engine relays: it streams ``GET`` from the source agent into ``PUT`` on the target
  (corral.agent.image_files), chunk by chunk. The target keeps a file only when its SHA-256
  is the one the source computed from its own disk; the image file goes last, so a host that
  has it has the whole image. A failed copy leaves nothing of the image on the target.

One copy of an image to a host at a time (concurrent creates on one host wait for the
first copy, then find the image there).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from corral.agent_api.image_files import BOOT_KINDS, FileKind, ImageFile
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Vm
from corral.engine.operations import OpContext
from corral.engine.services import host_fanout, vm_design
from corral.errors import CorralError, NotFound, Unavailable

_locks: dict[tuple[str, str], threading.Lock] = {}  # (host id, image name): one copy at a time
_locks_guard = threading.Lock()
SHARED_TYPES = frozenset({"shared", "rbd"})  # pools every host reaches


@contextlib.contextmanager
def _one_copy(host_id: str, image: str) -> Iterator[None]:
    with _locks_guard:
        lock = _locks.setdefault((host_id, image), threading.Lock())
    with lock:
        yield


def _wanted(img: Image) -> tuple[FileKind, list[FileKind]]:
    """(the image file's kind, the direct-boot files the row says travel with it)."""
    main: FileKind = "iso" if img.format == "iso" else "qcow2"
    boot = [k for k, v in zip(BOOT_KINDS, (img.kernel, img.initrd, img.cmdline), strict=True)
            if v is not None]
    return main, boot


def _held(agent: AgentClient, name: str) -> dict[str, int]:
    """kind -> size of the image's files on the host ({} when it has none)."""
    try:
        return {f.kind: f.size for f in agent.image_files(name).files}
    except NotFound:
        return {}


def ensure_for_vm(ctx: EngineContext, op: OpContext, vm_id: str,
                  span: tuple[int, int] = (2, 9), host_id: str | None = None) -> None:
    """Bring the VM's image to the VM's host (or ``host_id``: a migration's target) if it
    lacks it (its create calls this before making the root disk)."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None or vm.host_id is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        img = s.get(Image, vm.image_id)
        if img is None:
            raise NotFound(f"the image of VM {vm.name} no longer exists", field="image")
        pool = vm_design.root_pool(s, vm)
        shared = pool.name if pool is not None and pool.type in SHARED_TYPES else None
        host_id, name, file_size = host_id or vm.host_id, img.name, img.file_size
        main, boot = _wanted(img)
    ensure(ctx, op, host_id, name, main, boot, file_size, shared, span)


def ensure(ctx: EngineContext, op: OpContext, host_id: str, name: str, main: FileKind,
           boot: list[FileKind], file_size: int, shared_pool: str | None,
           span: tuple[int, int] = (2, 9)) -> None:
    """The files of image ``name`` on the host: copied from another host when missing."""
    target = ctx.agent(host_id)
    with _one_copy(host_id, name):
        have = _held(target, name)
        need: list[FileKind] = [k for k in boot if k not in have]
        # Absent, or another image of that name (a stale copy); a row of unknown size (0)
        # takes the file that is there.
        if main not in have or (file_size and have[main] != file_size):
            in_pool = shared_pool is not None and \
                target.image_in_pool(shared_pool, name).present
            if not in_pool:
                need.append(main)  # last: see the module doc
        if not need:
            return
        _copy(ctx, op, host_id, name, need, fresh=not have, span=span)


def _source(ctx: EngineContext, host_id: str, name: str,
            need: list[FileKind]) -> tuple[str, str]:
    """(id, name) of the first host (by name) that is up, or in maintenance (an evacuated
    host may hold the only copy; its agent still answers), and holds every file needed."""
    with ctx.db.session() as s:
        others = [(h.id, h.name) for h in s.query(Host).filter(
                      Host.id != host_id, Host.status.in_(("up", "maintenance")))
                  .order_by(Host.name)]
    outcomes = host_fanout.each_host(ctx, [(h, lambda a: _held(a, name)) for h, _ in others])
    for (h, host_name), o in zip(others, outcomes, strict=True):
        if o.answer is not None and all(k in o.answer for k in need):
            return h, host_name
    raise Unavailable(f"image {name} is on no other host that is up: it cannot be copied "
                      "to the VM's host", field="image")


def _copy(ctx: EngineContext, op: OpContext, host_id: str, name: str, need: list[FileKind],
          fresh: bool, span: tuple[int, int]) -> None:
    src_id, src_name = _source(ctx, host_id, name, need)
    with ctx.db.session() as s:
        host = s.get(Host, host_id)
        dst_name = host.name if host is not None else host_id
    source, target = ctx.agent(src_id), ctx.agent(host_id)
    op.progress(span[0], f"image {name} is not on host {dst_name}: hashing it on {src_name}")
    listed = {f.kind: f for f in source.image_files(name, digest=True, kinds=need).files}
    files = [listed[k] for k in need if k in listed]
    if len(files) != len(need):  # removed from the source in between
        raise Unavailable(f"image {name} changed on host {src_name} while being copied",
                          field="image")
    meter = _Meter(op, span, sum(f.size for f in files),
                   f"copying image {name} from host {src_name} to host {dst_name}")
    try:
        for f in files:
            _relay(source, target, name, f, meter)
    except CorralError:
        if fresh:  # nothing of it was there before: leave nothing (each file is whole or gone)
            with contextlib.suppress(CorralError):
                target.delete_image(name)
        raise
    op.progress(span[1], f"image {name} copied from host {src_name} to host {dst_name} "
                f"({meter.total >> 20} MiB, SHA-256 checked)")
    ctx.bus.publish("image", {"name": name, "host": dst_name, "status": "copied"})


def _relay(source: AgentClient, target: AgentClient, name: str, f: ImageFile,
           meter: _Meter) -> None:
    assert f.sha256 is not None
    with source.read_image_file(name, f.kind) as chunks:
        target.put_image_file(name, f.kind, f.size, f.sha256, meter.counting(chunks))


class _Meter:
    """The copy's progress on the operation, as bytes go through (a few updates, not one per
    chunk: each is a write to the database)."""

    def __init__(self, op: OpContext, span: tuple[int, int], total: int, doing: str) -> None:
        self.op, self.span, self.total, self.doing = op, span, total, doing
        self.done = 0
        self._shown = -1

    def counting(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.done += len(chunk)
            self._show()
            yield chunk

    def _show(self) -> None:
        part = self.done * 20 // max(1, self.total)  # every 5 %
        if part != self._shown:
            self._shown = part
            lo, hi = self.span
            self.op.progress(lo + (hi - lo) * self.done // max(1, self.total),
                             f"{self.doing}: {self.done >> 20} of {self.total >> 20} MiB")


def delete_everywhere(ctx: EngineContext, name: str) -> None:
    """Remove image ``name``'s files from every host that is up (copies included); the
    first host's error (in name order) goes on. Deleting is idempotent on each host."""
    with ctx.db.session() as s:
        ids = [h.id for h in s.query(Host).filter_by(status="up").order_by(Host.name)]
    host_fanout.answers(host_fanout.each_host(ctx, [(h, lambda a: a.delete_image(name))
                                                    for h in ids]))
