"""Images: import a file or URL, or build the tiny guest, on the host; refuse deletion while in use.

An import is an agent job (corral.agent.image_import: download, checksum, format checks,
conversion): the executor follows it with corral.engine.agent_jobs.run_job, so the
operation shows its progress. Images of format "iso" are ISO 9660 files kept as they are,
for CD-ROMs (``images/NAME.iso`` on the host).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from corral.agent_api.images import ImageImportBody, ImageInfo
from corral.api import Image as ImageOut
from corral.api import ImageBuildTiny, ImageImport, Operation
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.agent_client import AgentClient
from corral.engine.agent_jobs import run_job
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Image, Vm
from corral.engine.operations import OpContext
from corral.engine.services import host_files, image_copies, op_undo
from corral.engine.services.hosts import pick_host
from corral.errors import Conflict, CorralError, NotFound


def to_api(i: Image) -> ImageOut:
    return ImageOut(
        id=i.id, name=i.name, project=i.project, shared=i.shared, format=i.format,
        virtual_size=i.virtual_size,
        file_size=i.file_size, kernel=i.kernel is not None, status=i.status,
        created_at=i.created_at, template_vm=i.template_vm,
    )


def new_image(ctx: EngineContext, name: str, project: str = DEFAULT_PROJECT) -> str:
    with ctx.db.session() as s:
        if s.query(Image).filter_by(name=name).count():
            raise Conflict(f"image {name} already exists", field="name")
        img = Image(name=name, status="importing", project=project)
        s.add(img)
        with claims.unique(f"image {name} already exists", field="name"):  # a concurrent one
            s.flush()
        return img.id


def drop_new_image(ctx: EngineContext, agent: AgentClient, image_id: str, name: str) -> None:
    """Undo :func:`new_image` after a failed import: the host's file (if any) and the row."""
    with contextlib.suppress(CorralError):
        agent.delete_image(name)
    with ctx.db.session() as s:
        row = s.get(Image, image_id)
        if row is not None:
            s.delete(row)


def set_ready(ctx: EngineContext, image_id: str, info: ImageInfo) -> None:
    """The image row as the host made the file: ready, with its format and sizes."""
    with ctx.db.session() as s:
        row = s.get(Image, image_id)
        if row is not None:
            row.status, row.format = "ready", info.format
            row.virtual_size, row.file_size = info.virtual_size, info.file_size
            row.kernel, row.initrd, row.cmdline = info.kernel, info.initrd, info.cmdline


def import_image(ctx: EngineContext, req: ImageImport,
                 project: str = DEFAULT_PROJECT) -> Operation:
    # A file (on this single node, the agent's host) only from an import directory; a URL
    # not to loopback, link-local or host addresses (corral.safepaths, corral.safeurls).
    host_files.check_image_source(ctx, req.source)
    host = pick_host(ctx, 0)
    image_id = new_image(ctx, req.name, project)
    params = {"image_id": image_id, "host_id": host.id, "source": req.source,
              "format": req.format, "checksum": req.checksum}
    return ctx.ops.submit("image.import", {"images": [req.name]}, params, [f"image:{req.name}"],
                          host_id=host.id, project=project)


def build_tiny(ctx: EngineContext, req: ImageBuildTiny,
               project: str = DEFAULT_PROJECT) -> Operation:
    host = pick_host(ctx, 0)
    image_id = new_image(ctx, req.name, project)
    params = {"image_id": image_id, "host_id": host.id, "guest_agent": req.guest_agent}
    return ctx.ops.submit("image.build_tiny", {"images": [req.name]}, params,
                          [f"image:{req.name}"], host_id=host.id, project=project)


def _finish(ctx: EngineContext, op: OpContext, make: Callable[[AgentClient, str], ImageInfo]
            ) -> None:
    """Run the agent call that produces the image; on failure remove every trace of it."""
    image_id = op.params["image_id"]
    with ctx.db.session() as s:
        img = s.get(Image, image_id)
        if img is None:
            return
        name = img.name
    agent = ctx.agent(op.params["host_id"])
    op.progress(5, f"writing image {name}")
    try:
        agent.delete_image(name)  # a crashed earlier attempt's leftovers
        info = make(agent, name)
    except CorralError:
        drop_new_image(ctx, agent, image_id, name)
        raise
    set_ready(ctx, image_id, info)
    ctx.bus.publish("image", {"name": name, "status": "ready"})


def execute_import(ctx: EngineContext, op: OpContext) -> None:
    """Follow the agent's import job; a failed one has cleaned up the host, we drop the row."""
    image_id = op.params["image_id"]
    with ctx.db.session() as s:
        img = s.get(Image, image_id)
        if img is None:
            return
        name = img.name
    agent = ctx.agent(op.params["host_id"])
    body = ImageImportBody(source=op.params["source"], format=op.params["format"],
                           checksum=op.params.get("checksum"))
    op.progress(1, f"importing {op.params['source']}")
    try:
        info = run_job(agent, op, agent.import_image_job(name, body), span=(1, 99))
    except CorralError:
        drop_new_image(ctx, agent, image_id, name)
        raise
    set_ready(ctx, image_id, info)
    sha = f", sha256:{info.sha256}" if info.sha256 else ""
    again = f", download went on after {info.resumes} dropped connection(s)" \
        if info.resumes else ""
    op.progress(100, f"imported {name} ({info.source_format} as {info.format}, "
                     f"{info.virtual_size >> 20} MiB{sha}{again})")
    ctx.bus.publish("image", {"name": name, "status": "ready"})


def execute_build_tiny(ctx: EngineContext, op: OpContext) -> None:
    with_agent = bool(op.params.get("guest_agent"))
    op.progress(5, "downloading kernel and busybox, building the tiny guest"
                + (" with qemu-guest-agent" if with_agent else ""))
    _finish(ctx, op, lambda agent, name: agent.build_tiny(name, guest_agent=with_agent))


def list_images(ctx: EngineContext) -> list[ImageOut]:
    with ctx.db.session() as s:
        return [to_api(i) for i in s.query(Image).order_by(Image.name)]


def get(ctx: EngineContext, name: str) -> ImageOut:
    with ctx.db.session() as s:
        img = s.query(Image).filter_by(name=name).one_or_none()
        if img is None:
            raise NotFound(f"image {name} not found")
        return to_api(img)


def delete(ctx: EngineContext, name: str) -> Operation:
    with ctx.db.session() as s:
        img = s.query(Image).filter_by(name=name).one_or_none()
        if img is None:
            raise NotFound(f"image {name} not found")
        claims.hold(s, img)  # a VM create on it at the same moment: one of us sees the other
        users = [v.name for v in s.query(Vm).filter_by(image_id=img.id)]
        if users:
            raise Conflict(f"image {name} is used by VMs: {', '.join(sorted(users))}", vms=users)
        if img.status not in ("ready", "error"):  # error: a failed delete, tried again
            raise Conflict(f"image {name} is {img.status}, not ready: wait for its operation")
        img.status = "deleting"
        image_id = img.id
    host = pick_host(ctx, 0)
    return ctx.ops.submit("image.delete", {"images": [name]},
                          {"name": name, "host_id": host.id, "image_id": image_id},
                          [f"image:{name}"], host_id=host.id)


def execute_delete(ctx: EngineContext, op: OpContext) -> None:
    name = op.params["name"]
    image_copies.delete_everywhere(ctx, name)  # its copies on other hosts too
    with ctx.db.session() as s:
        img = s.query(Image).filter_by(name=name).one_or_none()
        if img is not None:
            s.delete(img)
    ctx.bus.publish("image", {"name": name, "status": "deleted"})


def register(ctx: EngineContext) -> None:
    new_row = op_undo.delete_row(ctx, Image, "image_id", event="image")  # a cancelled import
    ctx.ops.register("image.import", lambda op: execute_import(ctx, op), undo=new_row,
                     may_cancel=True)  # run_job checks the flag between progress reports
    ctx.ops.register("image.build_tiny", lambda op: execute_build_tiny(ctx, op), undo=new_row)
    ctx.ops.register("image.delete", lambda op: execute_delete(ctx, op),
                     undo=op_undo.set_fields(ctx, Image, "image_id", status="ready"),
                     failed=op_undo.set_fields(ctx, Image, "image_id", status="error"))
