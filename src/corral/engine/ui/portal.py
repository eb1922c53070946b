"""The user portal's pages: the create-VM form and a VM's snapshots (take, revert,
delete). Same rules as the other pages (routes.py): one permission per route, checked
again in the VM's project; an API error is shown next to the form field it concerns."""

from __future__ import annotations

from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from corral.api import Operation, Vm
from corral.api.snapshots import SnapshotCreate
from corral.engine.projects import full_name
from corral.engine.services import vm_snapshots, vms
from corral.engine.ui import portal_views, session, views
from corral.engine.ui.routes import POWER, TEMPLATES, UiRoute, ctx_of, render, started, ui_need
from corral.engine.ui.session import Caller
from corral.errors import CorralError, Forbidden, InvalidInput, WrongState

router = APIRouter(route_class=UiRoute, include_in_schema=False)
TEMPLATES.env.globals["snapshot_tree"] = portal_views.snapshot_tree  # _snapshots.html


def _form_page(request: Request, caller: Caller, form: portal_views.CreateForm,
               status: int = 200) -> Response:
    return render(request, "vm_new.html", caller, status=status, page="vms", f=form)


@router.get("/vms/new", response_class=HTMLResponse)
def new_vm(request: Request, project: str = "",
           caller: Caller = Depends(ui_need("vm.create"))) -> Response:
    """The create-VM form, with the project's quota use."""
    form = portal_views.create_form(ctx_of(request), caller.who, project[:63])
    return _form_page(request, caller, form)


@router.post("/vms/new", response_class=HTMLResponse)
async def create_vm(request: Request, caller: Caller = Depends(ui_need("vm.create"))) -> Response:
    """Check the form (fields, then the project's quotas), then create: the browser goes
    to the new VM's page, which follows the operation and the VM's state live."""
    ctx = ctx_of(request)
    sent = await session.form(request)
    values = {k: sent.get(k, "")[:8192] for k in portal_views.DEFAULTS}
    values["start"] = "on" if sent.get("start") == "on" else ""
    project = sent.get("project", "")[:63]
    form = await run_in_threadpool(portal_views.create_form, ctx, caller.who, project, values)
    request.state.audit_project = form.project
    if not form.project or project != form.project:
        form.errors["project"] = (f"You may not create VMs in project {project}."
                                  if project else "Choose a project.")
        return _form_page(request, caller, form, 422)
    req = portal_views.request_of(form)
    if req is not None:
        portal_views.check_quota(form, req, portal_views.image_size(form, values["source"]))
    if req is None or form.errors:
        return _form_page(request, caller, form, 422)
    try:
        await run_in_threadpool(vms.create, ctx, req, form.project)
    except CorralError as exc:
        if exc.status >= 500 and exc.status != 502:
            raise
        form.errors[portal_views.error_field(exc)] = exc.message
        return _form_page(request, caller, form, exc.status)
    full = full_name(form.project, req.name)
    return RedirectResponse(f"/vms/{quote(full)}", status_code=303)


# -- bulk start/stop ------------------------------------------------------------------------

BULK_MAX = 200
BULK = {"start": ({"stopped", "crashed", "error", "unknown"}, "start"),
        "stop": ({"running", "paused"}, "stop")}


@router.post("/vms/bulk", response_class=HTMLResponse)
async def bulk_power(request: Request, caller: Caller = Depends(ui_need("vm.power"))) -> Response:
    """Start or stop the VMs ticked on the list (the page asked to confirm a stop, naming
    them); those already so, or of a project where the role may not, are left as they are.
    The list's rows follow their states live."""
    ctx = ctx_of(request)
    action = (await session.form(request)).get("action", "")
    if action not in BULK:
        raise InvalidInput(f"action {action!r}: start or stop", field="action")
    picked = parse_qs((await request.body()).decode("utf-8", "replace")).get("vm", [])
    if not picked:
        raise InvalidInput("tick the VMs to start or stop first", field="vm")
    if len(picked) > BULK_MAX:
        raise InvalidInput(f"at most {BULK_MAX} VMs at once", field="vm")
    states, power = BULK[action]
    # all looked up first: one of another project (404, as for none) changes nothing
    found = {name: views.readable_vm(ctx, caller.who, name)
             for name in dict.fromkeys(n[:127] for n in picked)}
    started = 0
    for name, vm in found.items():
        if str(vm.state) in states and views.may(caller.who, "vm.power", vm.project):
            await run_in_threadpool(vms.change_state, ctx, name, POWER[power][0])
            started += 1
    if not started:
        raise WrongState(f"none of the ticked VMs can {action} now (already "
                         f"{'running' if action == 'start' else 'stopped'}, or not yours to "
                         "power)")
    back = (await session.form(request)).get("back", "")  # the list's page, filters, sort
    return RedirectResponse(back if back.startswith("/vms?") and "\\" not in back
                            else "/vms", status_code=303)


# -- snapshots ------------------------------------------------------------------------------

def _snapshot_vm(request: Request, caller: Caller, name: str, permission: str) -> Vm:
    vm = views.readable_vm(ctx_of(request), caller.who, name)
    request.state.audit_project = vm.project
    if not views.may(caller.who, permission, vm.project):
        raise Forbidden(f"your role in project {vm.project} does not allow this ({permission})",
                        permission=permission)
    return vm


def _answer(request: Request, caller: Caller, name: str, op: Operation) -> Response:
    return started(request, caller, op, f"/vms/{quote(name)}#h-snaps")


@router.get("/vms/{name}/snapshots", response_class=HTMLResponse)
def snapshots(request: Request, name: str,
              caller: Caller = Depends(ui_need("snapshot.read"))) -> Response:
    """The VM page's snapshot tree, fetched again when an operation on it ends."""
    data = views.vm_detail(ctx_of(request), caller.who, name)
    return render(request, "_snapshots.html", caller, v=data, vm=data.vm)


@router.post("/vms/{name}/snapshots", response_class=HTMLResponse)
async def take_snapshot(request: Request, name: str,
                        caller: Caller = Depends(ui_need("snapshot.create"))) -> Response:
    _snapshot_vm(request, caller, name, "snapshot.create")
    sent = await session.form(request)
    snap = portal_views.check_snapshot_name(sent.get("name", "")[:64])
    try:
        req = SnapshotCreate(name=snap, memory=sent.get("memory") == "on",
                             description=sent.get("description", "")[:1024] or None)
    except ValueError as exc:
        raise InvalidInput(f"snapshot name {snap!r}: {str(exc).splitlines()[-1].strip()}",
                           field="name") from None
    op = await run_in_threadpool(vm_snapshots.create, ctx_of(request), name, req)
    return _answer(request, caller, name, op)


@router.post("/vms/{name}/snapshots/{snap}/revert", response_class=HTMLResponse)
async def revert_snapshot(request: Request, name: str, snap: str,
                          caller: Caller = Depends(ui_need("snapshot.revert"))) -> Response:
    _snapshot_vm(request, caller, name, "snapshot.revert")
    op = await run_in_threadpool(vm_snapshots.revert, ctx_of(request), name, snap[:64])
    return _answer(request, caller, name, op)


@router.post("/vms/{name}/snapshots/{snap}/delete", response_class=HTMLResponse)
async def delete_snapshot(request: Request, name: str, snap: str,
                          caller: Caller = Depends(ui_need("snapshot.delete"))) -> Response:
    _snapshot_vm(request, caller, name, "snapshot.delete")
    op = await run_in_threadpool(vm_snapshots.delete, ctx_of(request), name, snap[:64])
    return _answer(request, caller, name, op)


@router.post("/vms/{name}/delete", response_class=HTMLResponse)
async def delete_vm(request: Request, name: str,
                    caller: Caller = Depends(ui_need("vm.delete"))) -> Response:
    """Delete the VM (its page asked for a confirmation naming it)."""
    _snapshot_vm(request, caller, name, "vm.delete")
    op = await run_in_threadpool(vms.delete, ctx_of(request), name, False)
    return started(request, caller, op, "/vms")
