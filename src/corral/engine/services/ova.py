"""OVA export (a stopped VM → OVF 1.0 + streamOptimized VMDK) and import (OVA → image + VM).

Files are on the host of the VM (this single node's machine, as ``image import`` reads
files): the agent writes the OVA and reads it (corral.agent.ova, jobs with progress). An
import makes an image ``NAME-ova`` of the OVA's first disk (converted to qcow2), then a VM
``NAME`` as a linked clone of it, with the CPUs, memory and first NIC's MAC of the
descriptor (its NIC models and network names are not kept: corral NICs are virtio on
``--network``).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from corral.api import Operation, VmCreate, VmState
from corral.api.snapshots import OvaExport, OvaImport
from corral.engine.agent_jobs import run_job
from corral.engine.context import EngineContext
from corral.engine.db.models import Image, Network, Vm
from corral.engine.operations import OpContext
from corral.engine.services import images, vm_nics, vm_snapshots, vms
from corral.engine.services.hosts import pick_host
from corral.errors import Conflict, CorralError, HostError, InvalidInput, NotFound, WrongState
from corral.images import ovf
from corral.validation import validate_name

_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def export(ctx: EngineContext, name: str, req: OvaExport) -> Operation:
    vm_id, host_id, state = vm_snapshots._vm(ctx, name)
    if state not in (VmState.STOPPED, VmState.CRASHED):
        raise WrongState(f"VM {name} is {state.value}: stop it before exporting",
                         state=state.value)
    path = Path(req.file)
    if not path.is_absolute() or path.suffix != ".ova":
        raise InvalidInput("the OVA file must be an absolute path ending in .ova", field="file")
    if path.exists():
        raise Conflict(f"{path} exists already", field="file")
    if not path.parent.is_dir():
        raise InvalidInput(f"directory {path.parent} does not exist", field="file")
    params = {"vm_id": vm_id, "host_id": host_id, "vm": name, "file": str(path)}
    return ctx.ops.submit("vm.export_ova", {"vms": [name]}, params, lock=f"vm:{name}")


def _execute_export(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    with ctx.db.session() as s:
        vm = s.get(Vm, p["vm_id"])
        if vm is None:
            raise NotFound(f"VM {p['vm']} no longer exists")
        net = s.get(Network, vm.network_id) if vm.network_id else None
        body = {"path": p["file"], "cpus": vm.cpus, "memory_mib": vm.memory_mib,
                "nics": [{"network": net.name if net else None, "mac": vm.mac}]}
    res = run_job(ctx.agent(p["host_id"]), op, "POST", f"/v1/disks/{p['vm']}/export-ova", body,
                  span=(1, 99))
    op.progress(100, f"exported {p['vm']} to {res['path']} ({res['size'] >> 20} MiB)")


def import_ova(ctx: EngineContext, req: OvaImport) -> Operation:
    path = Path(req.file)
    if not path.is_absolute() or not path.is_file():
        raise InvalidInput(f"{req.file} is not a readable file (give an absolute path)",
                           field="file")
    system = ovf.parse(ovf.read_descriptor(path))  # a bad descriptor is refused now (422)
    name = req.name or system.name
    try:
        validate_name(name, "name")
    except InvalidInput:
        raise InvalidInput(f"the OVA's VM name {name!r} is not a valid corral name: give one "
                           "with --name", field="name") from None
    if system.memory_mib < 16 or system.cpus < 1:
        raise InvalidInput(f"the OVA asks for {system.cpus} CPUs and {system.memory_mib} MiB",
                           field="file")
    image = f"{name}-ova"
    with ctx.db.session() as s:
        if s.query(Vm).filter_by(name=name).count():
            raise Conflict(f"VM {name} already exists (import with --name)", field="name")
        if s.query(Network).filter_by(name=req.network).count() == 0:
            raise InvalidInput(f"network {req.network} not found", field="network")
    host = pick_host(ctx, system.memory_mib)
    image_id = images._new_image(ctx, image)
    params = {"image_id": image_id, "host_id": host.id, "file": str(path), "name": name,
              "network": req.network, "start": req.start}
    # Locked on the image: the VM's own create operation (vm:NAME) runs inside this one.
    return ctx.ops.submit("vm.import_ova", {"vms": [name], "images": [image]}, params,
                          lock=f"image:{image}")


def _execute_import(ctx: EngineContext, op: OpContext) -> None:
    p = op.params
    with ctx.db.session() as s:
        img = s.get(Image, p["image_id"])
        if img is None:
            return
        image = img.name
    agent = ctx.agent(p["host_id"])
    try:
        info = run_job(agent, op, "POST", f"/v1/images/{image}/import-ova",
                       {"path": p["file"]}, span=(1, 80))
    except CorralError:
        with contextlib.suppress(CorralError):
            agent.call("DELETE", f"/v1/images/{image}")
        with ctx.db.session() as s:
            row = s.get(Image, p["image_id"])
            if row is not None:
                s.delete(row)
        raise
    with ctx.db.session() as s:
        row = s.get(Image, p["image_id"])
        if row is not None:
            row.status, row.format = "ready", info["format"]
            row.virtual_size, row.file_size = info["virtual_size"], info["file_size"]
    system = info["system"]
    with ctx.db.session() as s:
        exists = s.query(Vm).filter_by(name=p["name"]).count() > 0
    if not exists:
        op.progress(85, f"creating VM {p['name']}")
        create = vms.create(ctx, VmCreate(name=p["name"], image=image, cpus=system["cpus"],
                                          memory=f"{system['memory_mib']}M",
                                          network=p["network"], start=p["start"]))
        done = ctx.ops.wait(create.id, 600)
        if done.status.value != "success":
            raise HostError((done.error or {}).get("message") or "creating the VM failed")
    macs = [n["mac"] for n in system["nics"] if _MAC.fullmatch(n.get("mac") or "")]
    if macs:  # keep the OVA's MAC when it is free
        with ctx.db.session() as s:
            vm = s.query(Vm).filter_by(name=p["name"]).one()
            taken = vm_nics._mac_owner(s, macs[0].lower()) not in (None, vm.name)
            keep = not taken and vm.state == VmState.STOPPED.value and vm.mac != macs[0].lower()
            if keep:
                vm.mac = macs[0].lower()
            vm_id = vm.id
        if keep:
            agent.define(p["name"], vms.domain_xml(ctx, vm_id)[2])
    op.progress(100, f"imported VM {p['name']} ({system['cpus']} CPUs, "
                     f"{system['memory_mib']} MiB, image {image})")


def register(ctx: EngineContext) -> None:
    ctx.ops.register("vm.export_ova", lambda op: _execute_export(ctx, op))
    ctx.ops.register("vm.import_ova", lambda op: _execute_import(ctx, op))
