"""/api/v1/vms: VM lifecycle."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import TypeAdapter

from corral.api import (
    CloudInit,
    ConsoleTicket,
    Operation,
    Vm,
    VmAddress,
    VmCreate,
    VmPatch,
    VmStatePut,
)
from corral.api.scheduling import Placement
from corral.engine.console_proxy import proxy_console
from corral.engine.context import EngineContext
from corral.engine.routes.deps import Project, VmName, authenticated, context, listed, need
from corral.engine.services import (
    console_tickets,
    vm_addresses,
    vm_cloudinit,
    vm_guest_agent,
    vm_scheduling,
    vm_settings,
    vms,
)

router = APIRouter(tags=["vms"])
_VM_LIST = TypeAdapter(list[Vm])
guarded = APIRouter(prefix="/api/v1/vms", dependencies=[Depends(authenticated)])


@guarded.get("", dependencies=need("vm.read"), response_model=list[Vm])
def list_vms(projects: list[str] = Depends(listed("vm.read")),
             ctx: EngineContext = Depends(context)) -> Response:
    """The VMs of the project (``?project=*``: of every project the caller may read)."""
    # Serialized once, from models built by the service: FastAPI would validate the list
    # again against the response model first (a fifth of a 1,000-VM list's time).
    return Response(_VM_LIST.dump_json(vms.list_vms(ctx, projects)),
                    media_type="application/json")


@guarded.post("", dependencies=need("vm.create"), status_code=202, response_model=Operation, responses={
    200: {"model": Placement, "description": "explain=true: where it would go, and how every "
          "host was judged; nothing is created"}})
def create_vm(req: VmCreate, project: Project,
              explain: bool = Query(False, description="A dry run: answer the placement "
                                    "explanation (200), create nothing"),
              ctx: EngineContext = Depends(context)) -> Operation | JSONResponse:
    """Create a VM in the project, on the host the scheduler chooses (a 409
    ``insufficient_resources`` explains a refusal, host by host, in its details; a 409
    ``quota_exceeded`` names the project's quota, its limit and its use)."""
    if explain:
        return JSONResponse(vm_scheduling.explain(ctx, req).model_dump(mode="json"))
    return vms.create(ctx, req, project)


@guarded.get("/{name}", dependencies=need("vm.read"), response_model=Vm)
def get_vm(name: VmName, ctx: EngineContext = Depends(context)) -> Vm:
    """One VM; when it runs, also whether its guest agent answers (the list does not ask)."""
    return vm_guest_agent.with_agent_status(ctx, vms.get(ctx, name))


@guarded.get("/{name}/cloud-init", dependencies=need("vm.secrets"), response_model=CloudInit)
def cloud_init_settings(name: VmName, ctx: EngineContext = Depends(context)) -> CloudInit:
    """The VM's cloud-init settings whole, user-data and password hash included (a VM's show
    and list hide them): for operators and admins (vm.secrets). 404 without a seed."""
    return vm_cloudinit.settings(ctx, name)


@guarded.get("/{name}/placement", dependencies=need("vm.read"), response_model=Placement)
def placement(name: VmName, ctx: EngineContext = Depends(context)) -> Placement:
    """Where the VM runs and how every host would be judged for it now (its own allocation
    left out), by the rules a create follows."""
    return vm_scheduling.of_vm(ctx, name)


@guarded.patch("/{name}", dependencies=need("vm.update"), status_code=202, response_model=Operation)
def update_vm(name: VmName, req: VmPatch, ctx: EngineContext = Depends(context)) -> Operation:
    """Change a VM: live (description, balloon target, vCPUs up to cpu_max), at its next
    start (memory, CPU model, topology, boot order, graphics: listed in ``pending``), or only
    while stopped (firmware, Secure Boot, TPM, machine, cloud-init: 409 otherwise)."""
    return vm_settings.patch(ctx, name, req)


@guarded.get("/{name}/addresses", dependencies=need("vm.read"), response_model=list[VmAddress])
def addresses(name: VmName, ctx: EngineContext = Depends(context)) -> list[VmAddress]:
    """The guest's addresses: DHCP lease of its network, guest agent, host ARP table."""
    return vm_addresses.addresses(ctx, name)


@guarded.put("/{name}/state", dependencies=need("vm.power"), status_code=202, response_model=Operation)
def change_state(name: VmName, req: VmStatePut, ctx: EngineContext = Depends(context)) -> Operation:
    return vms.change_state(ctx, name, req)


@guarded.delete("/{name}", dependencies=need("vm.delete"), status_code=202, response_model=Operation)
def delete_vm(name: VmName, force: bool = False, ctx: EngineContext = Depends(context)) -> Operation:
    return vms.delete(ctx, name, force)


@guarded.get("/{name}/console-log", dependencies=need("vm.console"), response_class=PlainTextResponse)
def console_log(name: VmName, ctx: EngineContext = Depends(context)) -> str:
    return vms.console_log(ctx, name)


@guarded.post("/{name}/console-ticket", dependencies=need("vm.console"), response_model=ConsoleTicket)
def console_ticket(name: VmName, kind: console_tickets.Kind = Query(
        "serial", description="serial: opens .../console; vnc: opens .../vnc-websocket"),
        ctx: EngineContext = Depends(context)) -> ConsoleTicket:
    """A one-time ticket (30 s) that opens the VM's console WebSocket as ``?ticket=``: for
    clients that cannot send an Authorization header there (browsers)."""
    vms.get(ctx, name)  # 404 for no such VM
    return ConsoleTicket(ticket=console_tickets.issue(name, kind),
                         expires_in=int(console_tickets.TTL_S))


@router.websocket("/api/v1/vms/{name}/console")
async def console(ws: WebSocket, name: str) -> None:
    """The serial console (``?project=`` as on every VM route)."""
    await proxy_console(ws, name)


@router.websocket("/api/v1/vms/{name}/vnc-websocket")
async def vnc_websocket(ws: WebSocket, name: str) -> None:
    """The graphical console: the VM's VNC (RFB) bytes, relayed through its host's agent
    from the host's loopback, for noVNC (a ``?ticket=`` of kind vnc, or a bearer token)."""
    await proxy_console(ws, name, "vnc")


router.include_router(guarded)
