"""Clones of VMs (linked: O(1) qcow2 overlays; full: a copy with progress) and templates.

A linked clone freezes the source's disk into a shared base (corral.agent.clones): the source
and the clone each get an overlay on it, and the base is removed with its last user, so the
source VM can be deleted while clones exist. Clones need a stopped source (its disk must not
change under the freeze or the copy), except a full clone ``--from-snapshot`` (snapshot data
never changes). A template is an image made from a stopped VM's disk (flattened); ``vm
create --template T`` is ``vm create --image T``.

A clone's disk goes into its source's pool (services/vm_roots.py: an RBD clone of a frozen
``base.SRC.NEW`` on rbd pools, a qcow2 overlay in the pool otherwise). It copies every NIC of
the source (same networks, in order, new MACs; static IPs, QoS and security groups are not
copied). Templates are images marked with the VM they came from (``template list``).
"""

from __future__ import annotations

import contextlib

from corral.agent_api.pools import RootTemplateBody
from corral.agent_api.snapshots import CloneBody, TemplateBody
from corral.api import Image as ImageOut
from corral.api import Operation, VmState
from corral.api.snapshots import CloneMode, TemplateCreate, VmClone
from corral.engine import projects
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.agent_jobs import run_job
from corral.engine.context import EngineContext
from corral.engine.db import claims
from corral.engine.db.models import Image, Nic, Vm
from corral.engine.operations import OpContext
from corral.engine.services import (
    images,
    op_undo,
    quotas,
    security_groups,
    vm_cloudinit,
    vm_define,
    vm_design,
    vm_nics,
    vm_roots,
    vm_snapshots,
)
from corral.errors import Conflict, CorralError, InvalidInput, NotFound, WrongState

_STOPPED = {VmState.STOPPED, VmState.CRASHED}


def clone(ctx: EngineContext, source: str, req: VmClone, project: str = "default") -> Operation:
    """A copy of VM ``source`` (a full name) in its project, named ``req.name`` there."""
    req = req.model_copy(update={"name": projects.full_name(project, req.name)})
    mode = req.mode or (CloneMode.FULL if req.snapshot else CloneMode.LINKED)
    if req.snapshot and mode == CloneMode.LINKED:
        raise InvalidInput("a clone from a snapshot is a full copy (an internal snapshot cannot "
                           "be a backing file): use --full", field="mode")
    _src_id, host_id, state = vm_snapshots._vm(ctx, source)
    if req.snapshot is None and state not in _STOPPED:
        raise WrongState(f"VM {source} is {state.value}: stop it before cloning (its disk must "
                         "not change under the clone), or clone --from-snapshot",
                         state=state.value)
    if req.snapshot is not None:
        vm_snapshots._existing(ctx, host_id, source, req.snapshot)
    if mode == CloneMode.LINKED:
        snaps = [x.name for x in vm_snapshots.list_snapshots(ctx, source)]
        if snaps:
            raise Conflict(f"VM {source} has snapshots ({', '.join(snaps)}): a linked clone "
                           "would leave them behind in a frozen base; make a full clone (--full, "
                           "optionally --from-snapshot) or delete the snapshots", field="mode")
    with ctx.db.session() as s:
        if s.query(Vm).filter_by(name=req.name).count():
            raise Conflict(f"VM {req.name} already exists", field="name")
        src = s.query(Vm).filter_by(name=source).one()
        # Every NIC of the source, in order: same networks, new MACs, no static IPs (a
        # reserved address belongs to one NIC; the clone's NICs take dynamic leases).
        nics = list(s.query(Nic).filter_by(vm_id=src.id).order_by(Nic.idx))
        macs: list[str] = []
        for _ in nics:
            mac = vm_nics.new_mac(s)
            while mac in macs:
                mac = vm_nics.new_mac(s)
            macs.append(mac)
        quotas.check_vm(s, project, src.cpus, src.memory_mib, src.disk_bytes)
        vm = Vm(name=req.name, project=project, image_id=src.image_id, host_id=src.host_id, cpus=src.cpus,
                memory_mib=src.memory_mib, disk_bytes=src.disk_bytes,
                desired_power="running" if req.start else "stopped",
                state=VmState.CREATING.value, cloud_init=src.cloud_init,
                root_pool_id=src.root_pool_id, hardware=src.hardware,
                memory_target_mib=src.memory_target_mib)
        s.add(vm)
        with claims.unique(f"VM {req.name} or its MAC was just taken by a concurrent request",
                           field="name"):
            s.flush()
        for nic, mac in zip(nics, macs, strict=True):
            s.add(Nic(vm_id=vm.id, network_id=nic.network_id, mac=mac, idx=nic.idx))
        with claims.unique(f"a MAC of VM {req.name} was just taken by a concurrent request",
                           field="mac"):
            s.flush()
        vm_id = vm.id
    params = {"vm_id": vm_id, "source": source, "mode": mode.value, "snapshot": req.snapshot,
              "start": req.start}
    return ctx.ops.submit("vm.clone", {"vms": [source, req.name]}, params,
                          [f"vm:{source}", f"vm:{req.name}"], host_id=host_id)


def require_stopped(ctx: EngineContext, vm_id: str, what: str) -> None:
    """Under the locks: a start queued before this operation may have run meanwhile."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        state = VmState(vm.state)
        if state not in _STOPPED:
            raise WrongState(f"VM {vm.name} is {state.value} now: stop it before {what}",
                             state=state.value)


def _prereq_clone(ctx: EngineContext, op: OpContext) -> None:
    if op.params.get("snapshot") is None:  # a snapshot's data never changes: any state
        with ctx.db.session() as s:
            src_id = s.query(Vm.id).filter_by(name=op.params["source"]).scalar()
        require_stopped(ctx, src_id or "?", "cloning it")


def _execute_clone(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    vm_id = p["vm_id"]
    name, host_id, xml = vm_design.domain_xml(ctx, vm_id)
    with ctx.db.session() as s:
        row = s.get(Vm, vm_id)
        has_seed = row is not None and row.cloud_init is not None
    agent = ctx.agent(host_id)
    root = vm_roots.pool_type(ctx, vm_id)  # the clone's disk goes where the source's is
    try:
        op.check_cancelled()  # safe points: a cancel rolls back like any failure
        if p["mode"] == CloneMode.LINKED.value:
            op.progress(10, f"linked clone of {p['source']}'s disk")
            if root is None:
                agent.linked_clone_disk(name, p["source"])
            else:
                agent.linked_clone_root(root[0], name, p["source"])
        else:
            op.progress(5, f"copying the disk of {p['source']}")
            copy = CloneBody(source=p["source"], snapshot=p.get("snapshot"))
            if root is None:
                run_job(agent, op, agent.full_clone_disk_job(name, copy), span=(5, 90))
            else:
                run_job(agent, op, agent.full_clone_root_job(root[0], name, copy), span=(5, 90))
        op.check_cancelled()
        if has_seed:
            vm_cloudinit.push_seed(ctx, agent, vm_id)
        op.progress(92, "defining domain")
        security_groups.push_vm(ctx, vm_id)  # its NICs' ports: anti-spoofing from the start
        state = vm_define.define_and_start(agent, op, name, xml,
                                           bool(p.get("start")), started_at=95)
    except CorralError:
        vm_define.rollback_create(ctx, agent, vm_id, name)
        raise
    vm_define.set_fields(ctx, vm_id, state=state.value)
    op.progress(100, f"{name}: {p['mode']} clone of {p['source']}")


def create_template(ctx: EngineContext, req: TemplateCreate,
                    project: str = DEFAULT_PROJECT) -> Operation:
    """A template of the project from its stopped VM ``req.vm``."""
    req = req.model_copy(update={"vm": projects.full_name(project, req.vm)})
    vm_id, host_id, state = vm_snapshots._vm(ctx, req.vm)
    if state not in _STOPPED:
        raise WrongState(f"VM {req.vm} is {state.value}: stop it before making a template of "
                         "its disk", state=state.value)
    with ctx.db.session() as s:
        vm = s.query(Vm).filter_by(name=req.vm).one()
        origin = s.get(Image, vm.image_id)
        boot_from = origin.name if origin is not None and origin.kernel else None
        root = vm_design.root_pool(s, vm)
        pool = root.name if root is not None else None
    image_id = images.new_image(ctx, req.name, project)
    with ctx.db.session() as s:
        row = s.get(Image, image_id)
        if row is not None:
            row.template_vm = req.vm
    params = {"image_id": image_id, "host_id": host_id, "vm": req.vm, "vm_id": vm_id,
              "boot_from": boot_from, "pool": pool}
    return ctx.ops.submit("template.create", {"images": [req.name], "vms": [req.vm]}, params,
                          [f"vm:{req.vm}", f"image:{req.name}"], host_id=host_id)


def _execute_template(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    with ctx.db.session() as s:
        img = s.get(Image, p["image_id"])
        if img is None:
            return
        name = img.name
    agent = ctx.agent(p["host_id"])
    try:
        if p.get("pool"):  # flattened from the pool (an RBD image: read through librbd)
            job = agent.root_template_job(p["pool"], p["vm"], RootTemplateBody(
                name=name, boot_from=p.get("boot_from")))
        else:
            job = agent.template_job(name, TemplateBody(vm=p["vm"],
                                                        boot_from=p.get("boot_from")))
        info = run_job(agent, op, job, span=(1, 99))
    except CorralError:
        with contextlib.suppress(CorralError):
            agent.delete_image(name)
        with ctx.db.session() as s:
            row = s.get(Image, p["image_id"])
            if row is not None:
                s.delete(row)
        raise
    images.set_ready(ctx, p["image_id"], info)
    op.progress(100, f"template {name} made from VM {p['vm']}")
    ctx.bus.publish("image", {"name": name, "status": "ready"})


def list_templates(ctx: EngineContext) -> list[ImageOut]:
    """Images made by ``template create`` (the others are imported or built)."""
    with ctx.db.session() as s:
        rows = s.query(Image).filter(Image.template_vm.isnot(None)).order_by(Image.name)
        return [images.to_api(i) for i in rows]


def delete_template(ctx: EngineContext, name: str) -> Operation:
    """Delete a template: an image delete (refused while VMs use it), of templates only."""
    with ctx.db.session() as s:
        row = s.query(Image).filter_by(name=name).one_or_none()
        if row is None or row.template_vm is None:
            raise NotFound(f"template {name} not found (`corral template list`)", field="name")
    return images.delete(ctx, name)


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.clone", lambda op: _execute_clone(ctx, op), may_cancel=True,
                     prereq=lambda op: _prereq_clone(ctx, op),
                     undo=op_undo.delete_row(ctx, Vm, "vm_id", event="vm", field="state"))
    ctx.ops.register("template.create", lambda op: _execute_template(ctx, op), may_cancel=True,
                     prereq=lambda op: require_stopped(ctx, op.params.get("vm_id") or "?",
                                                       "making a template of it"),
                     undo=op_undo.delete_row(ctx, Image, "image_id", event="image"))
