"""Offline guest customization of an image or of a stopped VM's disk (libguestfs on the host).

Both are operations that follow an agent job (corral.agent.customize through
corral.engine.agent_jobs.run_job). The host works on a copy of the disk and puts it in place
only when everything succeeded, so a failure changes nothing and a re-run (engine restart)
starts from the same disk.

Passwords and file contents travel in the operation's parameters (an engine restart must be
able to run the operation again) and are scrubbed from them when the operation ends.

- An image can be customized only while no VM uses it: VM disks are qcow2 overlays on it,
  and changing the base under them would corrupt them. While it runs, the image's status is
  ``customizing`` (VM creation and deletion wait for ``ready``).
- A VM must be stopped (and meant to stay stopped); the operation holds the VM's lock, so a
  start asked meanwhile runs after it.
"""

from __future__ import annotations

from corral.api import GuestCustomize, Operation, VmState
from corral.engine.agent_jobs import run_job
from corral.engine.context import EngineContext
from corral.engine.db.models import Image, Vm
from corral.engine.db.models import Operation as OperationRow
from corral.engine.operations import OpContext
from corral.engine.services import op_undo, vm_roots
from corral.engine.services.hosts import pick_host
from corral.engine.services.vm_lookup import find_vm
from corral.errors import Conflict, InvalidInput, NotFound, WrongState

STOPPED = (VmState.STOPPED.value, VmState.CRASHED.value)


def _summary(req: GuestCustomize) -> str:
    parts = []
    if req.hostname:
        parts.append(f"hostname {req.hostname}")
    if req.files:
        parts.append(f"{len(req.files)} file(s)")
    if req.passwords:
        parts.append("password of " + ", ".join(p.user for p in req.passwords))
    if req.commands:
        parts.append(f"{len(req.commands)} command(s)")
    return ", ".join(parts)


def customize_image(ctx: EngineContext, name: str, req: GuestCustomize) -> Operation:
    host = pick_host(ctx, 0)
    with ctx.db.session() as s:
        img = s.query(Image).filter_by(name=name).one_or_none()
        if img is None:
            raise NotFound(f"image {name} not found")
        if img.format == "iso":
            raise InvalidInput(f"image {name} is an ISO: there is no guest disk to customize",
                               field="name")
        users = sorted(v.name for v in s.query(Vm).filter_by(image_id=img.id))
        if users:
            raise Conflict(f"image {name} is the base of VMs {', '.join(users)}: changing it "
                           "would corrupt their disks; customize those VMs instead "
                           "(corral vm customize)", vms=users)
        if img.status != "ready":
            raise Conflict(f"image {name} is {img.status}, not ready")
        img.status = "customizing"
        image_id = img.id
    params = {"image_id": image_id, "name": name, "host_id": host.id,
              "spec": req.model_dump(mode="json"), "summary": _summary(req)}
    return ctx.ops.submit("image.customize", {"images": [name]}, params, [f"image:{name}"],
                          host_id=host.id)


def customize_vm(ctx: EngineContext, name: str, req: GuestCustomize) -> Operation:
    with ctx.db.session() as s:
        vm = find_vm(s, name)
        _check_stopped(vm)
        if vm.host_id is None:
            raise Conflict(f"VM {name} has no host")
        params = {"vm_id": vm.id, "name": name, "host_id": vm.host_id,
                  "spec": req.model_dump(mode="json"), "summary": _summary(req)}
    vm_roots.require_storage_dir(ctx, str(params["vm_id"]), name, "offline customization")
    return ctx.ops.submit("vm.customize", {"vms": [name]}, params, [f"vm:{name}"],
                          host_id=str(params["host_id"]))


def _check_stopped(vm: Vm) -> None:
    if vm.state not in STOPPED or vm.desired_power == "running":
        raise WrongState(f"cannot customize VM {vm.name}: it is {vm.state}; stop it first "
                         "(its disk must not be in use)")


def _scrub(ctx: EngineContext, op: OpContext) -> None:
    """Remove passwords and file contents from the operation's stored parameters."""
    with ctx.db.session() as s:
        row = s.get(OperationRow, op.id)
        if row is None:
            return
        params = dict(row.params)
        spec = dict(params.get("spec") or {})
        spec["passwords"] = [{"user": p.get("user"), "password": "(removed)"}
                             for p in spec.get("passwords") or []]
        spec["files"] = [{"path": f.get("path"), "content": "(removed)", "mode": f.get("mode")}
                         for f in spec.get("files") or []]
        params["spec"] = spec
        row.params = params


def execute_image(ctx: EngineContext, op: OpContext) -> None:
    name = op.params["name"]
    agent = ctx.agent(op.params["host_id"])
    try:
        op.progress(1, f"customizing image {name}: {op.params.get('summary')}")
        spec = GuestCustomize.model_validate(op.params["spec"])
        result = run_job(agent, op, agent.customize_image_job(name, spec), span=(1, 99))
        with ctx.db.session() as s:
            img = s.get(Image, op.params["image_id"])
            if img is not None:
                img.file_size = result.file_size or img.file_size
        op.progress(100, f"customized image {name}: {op.params.get('summary')}")
    finally:
        with ctx.db.session() as s:
            img = s.get(Image, op.params["image_id"])
            if img is not None and img.status == "customizing":
                img.status = "ready"
        _scrub(ctx, op)
    ctx.bus.publish("image", {"name": name, "status": "ready"})


def execute_vm(ctx: EngineContext, op: OpContext) -> None:
    name = op.params["name"]
    try:
        with ctx.db.session() as s:  # again, under the VM's lock
            vm = s.get(Vm, op.params["vm_id"])
            if vm is None:
                raise NotFound(f"VM {name} not found")
            _check_stopped(vm)
        agent = ctx.agent(op.params["host_id"])
        op.progress(1, f"customizing VM {name}: {op.params.get('summary')}")
        spec = GuestCustomize.model_validate(op.params["spec"])
        run_job(agent, op, agent.customize_disk_job(name, spec), span=(1, 99))
        op.progress(100, f"customized VM {name}: {op.params.get('summary')}")
    finally:
        _scrub(ctx, op)


def _undo_image(ctx: EngineContext, op: OpContext) -> None:
    """Cancelled before it started: the image is ready again, the secrets go."""
    op_undo.set_fields(ctx, Image, "image_id", status="ready")(op)
    _scrub(ctx, op)


def register(ctx: EngineContext) -> None:
    ctx.ops.register("image.customize", lambda op: execute_image(ctx, op),
                     undo=lambda op: _undo_image(ctx, op))
    ctx.ops.register("vm.customize", lambda op: execute_vm(ctx, op),
                     undo=lambda op: _scrub(ctx, op))
