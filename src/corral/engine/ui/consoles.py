"""The VM consoles in the browser: the serial console (xterm.js, static/console.js) and the
graphical one (noVNC, static/display.js).

A browser's WebSocket sends the session cookie but no header, and a cookie alone would let
another site's page open a WebSocket here (WebSockets have no CORS): so the page asks for a
console ticket first, by a POST with its CSRF token (the session, then ``vm.console`` in
the VM's project), and opens the API's console WebSocket with it (``?ticket=``, spent on
first use, 30 s). The WebSocket relays through the VM's host's agent (engine/console_proxy.py),
so a VM on any host of the cluster is reached the same way, and VNC stays on the host's
loopback."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from corral.api import Vm
from corral.engine.context import EngineContext
from corral.engine.projects import bare_name, full_name
from corral.engine.services import console_tickets
from corral.engine.ui import session, views
from corral.engine.ui.routes import SECURITY_HEADERS, UiRoute, ctx_of, render, ui_need
from corral.engine.ui.session import Caller
from corral.errors import Forbidden, InvalidInput

router = APIRouter(route_class=UiRoute, include_in_schema=False)

# xterm.js sizes and colours its rows with <style> elements it makes at run time; the
# serial console's page alone lets inline styles in (scripts stay 'self' only).
TERMINAL_CSP = SECURITY_HEADERS["Content-Security-Policy"].replace(
    "style-src 'self';", "style-src 'self' 'unsafe-inline';")
SOCKETS: dict[console_tickets.Kind, str] = {"serial": "console", "vnc": "vnc-websocket"}


def _console_vm(ctx: EngineContext, caller: Caller, name: str) -> Vm:
    """The VM, if the caller may read it (else 404, as for none) and open its console."""
    vm = views.readable_vm(ctx, caller.who, name)
    if not views.may(caller.who, "vm.console", vm.project):
        raise Forbidden(f"your role in project {vm.project} does not allow opening the "
                        "VM's console (vm.console)", permission="vm.console")
    return vm


@router.get("/vms/{name}/console", response_class=HTMLResponse)
def serial_page(request: Request, name: str,
                caller: Caller = Depends(ui_need("vm.console"))) -> Response:
    vm = _console_vm(ctx_of(request), caller, name)
    response = render(request, "console.html", caller, page="vms", vm=vm,
                      full=full_name(vm.project, vm.name), kind="serial")
    response.headers["Content-Security-Policy"] = TERMINAL_CSP
    return response


@router.get("/vms/{name}/display", response_class=HTMLResponse)
def display_page(request: Request, name: str,
                 caller: Caller = Depends(ui_need("vm.console"))) -> Response:
    vm = _console_vm(ctx_of(request), caller, name)
    return render(request, "display.html", caller, page="vms", vm=vm,
                  full=full_name(vm.project, vm.name), kind="vnc")


@router.get("/vms/{name}/console-state", response_class=HTMLResponse)
def console_state(request: Request, name: str,
                  caller: Caller = Depends(ui_need("vm.read"))) -> Response:
    """The consoles' state badge, fetched again when the event stream says the VM changed."""
    vm = views.readable_vm(ctx_of(request), caller.who, name)
    return render(request, "_console_state.html", caller, vm=vm,
                  full=full_name(vm.project, vm.name))


@router.post("/vms/{name}/console-ticket")
async def console_ticket(request: Request, name: str,
                         caller: Caller = Depends(ui_need("vm.console"))) -> Response:
    """A ticket for one of the VM's console WebSockets (form field ``kind``: serial or vnc)
    and the WebSocket's path: JSON, for console.js and display.js."""
    sent = (await session.form(request)).get("kind", "serial")
    kind = next((k for k in console_tickets.KINDS if k == sent), None)
    if kind is None:
        raise InvalidInput(f"kind {sent[:20]!r}: one of {', '.join(SOCKETS)}", field="kind")
    vm = _console_vm(ctx_of(request), caller, name)
    full = full_name(vm.project, vm.name)
    ticket = console_tickets.issue(full, kind)
    query = urlencode({"project": vm.project, "ticket": ticket})
    path = f"/api/v1/vms/{quote(bare_name(full), safe='')}/{SOCKETS[kind]}?{query}"
    return JSONResponse({"ticket": ticket, "url": path,
                         "expires_in": int(console_tickets.TTL_S)},
                        headers=SECURITY_HEADERS)
