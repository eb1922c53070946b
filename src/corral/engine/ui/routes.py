"""The web UI's pages, served at ``/`` beside the API (which stays under /api/v1).

Server-rendered (Jinja2) with htmx for the live parts: a VM's row and its detail's header
are fragments the page fetches again when the engine's event stream (``/ui/events``, the
API's stream for the session's user) says the VM changed; a long action answers an
operation fragment that polls itself until the operation ends.

Each route names the one permission it needs (``ui_need``, the same permissions and access
as the API's ``need``); what a page lists is filtered by the caller's projects (views.py).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from corral.api import VmStatePut
from corral.api.models import PowerAction
from corral.engine.context import EngineContext
from corral.engine.permissions import ALL_PROJECTS, PERMISSIONS, PROJECT_SCOPED, SELF
from corral.engine.routes import events as event_routes
from corral.engine.services import auth, logins, vm_pages, vms
from corral.engine.ui import filters, session, views
from corral.engine.ui.session import Caller
from corral.errors import CorralError, Forbidden, InvalidInput, NotFound

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
filters.install(TEMPLATES.env)

# What a browser may load and where it may send things: our own files only (no inline
# script, no CDN), no framing. Inline style attributes only: the meters' widths.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
POWER = {  # the form's action: what the API is asked, and how the button and dialog say it
    "start": (VmStatePut(action=PowerAction.START), "Start", ""),
    "stop": (VmStatePut(action=PowerAction.STOP), "Stop",
             "Stop VM {name}? Its guest is asked to shut down, then forced off after 60 s."),
    "force-off": (VmStatePut(action=PowerAction.STOP, force=True, timeout=0), "Force off",
                  "Force off VM {name}? Like pulling the plug: unsaved data in the guest is lost."),
}


class LoginNeeded(Exception):
    """No valid session: the browser goes to the login page."""


class CsrfRefused(Exception):
    """An unsafe request without this session's CSRF token."""


def ctx_of(request: Request) -> EngineContext:
    """The engine's context the app serves (every page module's)."""
    ctx: EngineContext = request.app.state.ctx
    return ctx


def render(request: Request, template: str, caller: Caller | None = None,
           status: int = 200, **values: Any) -> HTMLResponse:
    who = caller.who if caller else None
    response = TEMPLATES.TemplateResponse(request, template, {
        "caller": caller, "user": who.user if who else None, "role": who.role if who else None,
        "csrf": caller.csrf if caller else values.pop("login_csrf", ""),
        "may": (lambda perm, project=ALL_PROJECTS: views.may(who, perm, project)) if who
        else (lambda *_: False), **values}, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def started(request: Request, caller: Caller, op: Any, back: str) -> Response:
    """What an action that started an operation answers: its progress panel to htmx (it
    polls itself), or to a plain form post a redirect to ``back``."""
    if not request.headers.get("hx-request"):
        return RedirectResponse(back, status_code=303)
    return render(request, "_operation.html", caller, op=op)


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "error.html", session.caller(ctx_of(request), request),
                  status=status, title=title, message=message)


class UiRoute(APIRoute):
    """A page route: errors become pages (the API's become JSON), a missing session a
    redirect to the login page (htmx: an ``HX-Redirect``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginNeeded:
                target = "/login?next=" + quote(request.url.path, safe="/")
                if request.headers.get("hx-request"):
                    return Response(status_code=401, headers={"HX-Redirect": target})
                return RedirectResponse(target, status_code=303)
            except CsrfRefused:
                return _error_page(request, 403, "Request refused",
                                   "The form was missing its security token or it was wrong "
                                   "(an old page, or another site posting here). Reload the "
                                   "page and try again.")
            except CorralError as exc:
                return _error_page(request, exc.status, _TITLES.get(exc.status, "Error"),
                                   exc.message)
            except RequestValidationError as exc:
                return _error_page(request, 422, "Invalid request", str(exc.errors()[:1]))

        return guarded


_TITLES = {403: "Not allowed", 404: "Not found", 409: "Not possible now", 422: "Invalid input",
           429: "Too many attempts", 502: "A host did not answer", 503: "Unavailable"}

router = APIRouter(route_class=UiRoute, include_in_schema=False)


def ui_need(permission: str) -> Callable[..., Coroutine[Any, Any, Caller]]:
    """The page's permission (as the API's ``need``): a session first (else the login
    page), the CSRF token on unsafe methods (else 403), then the permission — a
    project-scoped one in at least one project (the page shows those projects only)."""
    if permission != SELF and permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    async def check(request: Request) -> Caller:
        caller = session.caller(ctx_of(request), request)
        if request.method not in session.SAFE_METHODS:
            sent = await session.csrf_sent(request)
            if caller is None or not session.same(sent, caller.csrf):
                raise CsrfRefused()
        if caller is None:
            raise LoginNeeded()
        who = caller.who
        if permission in PROJECT_SCOPED:
            allowed = permission in who.access.anywhere()
        else:
            allowed = who.access.may(permission, ALL_PROJECTS)
        if not allowed:
            raise Forbidden(f"your role does not allow this ({permission})", permission=permission)
        return caller

    check.permission = permission  # type: ignore[attr-defined]  # routes/deps.py reads it
    return check


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no ``//host``, no scheme): logins redirect nowhere else."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


# -- login ----------------------------------------------------------------------------------

@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    ctx = ctx_of(request)
    if session.caller(ctx, request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_form(request, next)


def _login_form(request: Request, next_path: str, status: int = 200, error: str = "",
                username: str = "") -> Response:
    token = session.new_login_csrf()
    response = render(request, "login.html", status=status, login_csrf=token,
                      next=_safe_next(next_path), error=error, username=username)
    session.set_cookie(response, session.LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """The login form: its CSRF token must match its cookie (double submit), then the
    user's password is checked as the API's login checks it (local, then LDAP)."""
    ctx = ctx_of(request)
    fields = await session.form(request)
    if not session.same(fields.get(session.CSRF_FIELD, ""),
                        request.cookies.get(session.LOGIN_CSRF_COOKIE, "")):
        raise CsrfRefused()
    username = fields.get("username", "").strip()[:63]
    password = fields.get("password", "")[:4096]
    next_path = fields.get("next", "/")
    request.state.login_user = username  # the name tried, for the audit log
    if not username or not password:
        return _login_form(request, next_path, 422, "Enter your user name and password.",
                           username)
    try:  # in a worker: argon2 and the login guard's slow-down take their time
        name = await run_in_threadpool(logins.check, ctx, username, password, _address(request))
    except CorralError as exc:
        return _login_form(request, next_path, exc.status, _login_error(exc), username)
    # it expires when idle; each use moves that on, up to session.TTL (session.caller)
    secret, _expires = await run_in_threadpool(auth.start_session, ctx, name, session.IDLE)
    response = RedirectResponse(_safe_next(next_path), status_code=303)
    session.set_cookie(response, session.SESSION_COOKIE, secret,
                       max_age=int(session.TTL.total_seconds()))
    session.clear_cookie(response, session.LOGIN_CSRF_COOKIE)
    return response


def _login_error(exc: CorralError) -> str:
    if exc.status == 401:
        return "Wrong user name or password."
    return exc.message[:1].upper() + exc.message[1:]


@router.post("/logout")
def logout(request: Request, caller: Caller = Depends(ui_need(SELF))) -> Response:
    auth.revoke(ctx_of(request), caller.who.token_id)  # refused from now on, server-side
    response = RedirectResponse("/login", status_code=303)
    session.clear_cookie(response, session.SESSION_COOKIE)
    return response


# -- pages ----------------------------------------------------------------------------------

@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, caller: Caller = Depends(ui_need("status.read"))) -> Response:
    data = views.dashboard(ctx_of(request), caller.who)
    return render(request, "dashboard.html", caller, page="dashboard", d=data)


@router.get("/vms", response_class=HTMLResponse)
def vm_list(request: Request, name: str = "", state: str = "", host: str = "",
            project: str = "", sort: str = "", page: str = "1",
            caller: Caller = Depends(ui_need("vm.read"))) -> Response:
    """A page of the caller's VMs (100 a page; filters and sort kept across pages)."""
    number = int(page) if page.isdigit() and len(page) < 7 else 1  # else the first
    wanted = vm_pages.VmQuery(
        name=name[:63].strip(), state=state[:20], host=host[:63], project=project[:63],
        sort=sort if sort.removeprefix("-") in vm_pages.SORTS else vm_pages.DEFAULT_SORT,
        page=number)
    data = views.vm_list(ctx_of(request), caller.who, wanted)
    return render(request, "vms.html", caller, page="vms", l=data, states=views.STATES,
                  power=POWER)


@router.get("/vms/{name}/row", response_class=HTMLResponse)
def vm_row(request: Request, name: str, caller: Caller = Depends(ui_need("vm.read"))) -> Response:
    """One row of the VM list, fetched again when the event stream says the VM changed."""
    vm = views.readable_vm(ctx_of(request), caller.who, name)
    return render(request, "_vm_row.html", caller, vm=vm, power=POWER,
                  may_power=views.may(caller.who, "vm.power", vm.project))


@router.get("/vms/{name}", response_class=HTMLResponse)
def vm_detail(request: Request, name: str, caller: Caller = Depends(ui_need("vm.read"))) -> Response:
    data = views.vm_detail(ctx_of(request), caller.who, name)
    return render(request, "vm.html", caller, page="vms", v=data, vm=data.vm, power=POWER,
                  may_power=data.may_power)


@router.get("/vms/{name}/summary", response_class=HTMLResponse)
def vm_summary(request: Request, name: str,
               caller: Caller = Depends(ui_need("vm.read"))) -> Response:
    """The VM page's live part (state, actions, configuration, recent operations), fetched
    again when the event stream says the VM changed."""
    top = views.vm_top(ctx_of(request), caller.who, name)
    return render(request, "_vm_top.html", caller, v=top, vm=top.vm, power=POWER,
                  may_power=top.may_power)


@router.post("/vms/{name}/power", response_class=HTMLResponse)
async def vm_power(request: Request, name: str,
                   caller: Caller = Depends(ui_need("vm.power"))) -> Response:
    """Start, stop or force off: an operation, shown with its progress."""
    ctx = ctx_of(request)
    action = (await session.form(request)).get("action", "")
    if action not in POWER:
        raise InvalidInput(f"action {action!r}: one of {', '.join(POWER)}", field="action")
    vm = views.readable_vm(ctx, caller.who, name)
    request.state.audit_project = vm.project  # the audit log's project (engine/audit.py)
    if not views.may(caller.who, "vm.power", vm.project):
        raise Forbidden(f"your role in project {vm.project} does not allow starting or "
                        "stopping VMs (vm.power)", permission="vm.power")
    op = await run_in_threadpool(vms.change_state, ctx, name, POWER[action][0])
    return started(request, caller, op, f"/vms/{quote(name)}")


@router.get("/operations/{op_id}", response_class=HTMLResponse)
def operation(request: Request, op_id: str,
              caller: Caller = Depends(ui_need("operation.read"))) -> Response:
    """An operation's progress: the fragment polls itself until the operation ends."""
    if len(op_id) > 36:
        raise NotFound(f"operation {op_id[:36]} not found")
    op = views.readable_operation(ctx_of(request), caller.who, op_id)
    return render(request, "_operation.html", caller, op=op)


@router.get("/ui/events/recent")
def recent_events(request: Request, caller: Caller = Depends(ui_need("event.read"))
                  ) -> JSONResponse:
    """The task panel's history (then it follows ``/ui/events``): the newest events the
    caller may see, newest first, an operation once (its latest)."""
    found = views.recent_events(ctx_of(request), caller.who, views.PANEL_SIZE)
    return JSONResponse([e.model_dump(mode="json") for e in found],
                        headers=SECURITY_HEADERS)


@router.get("/ui/events")
async def events(request: Request, caller: Caller = Depends(ui_need("event.read"))
                 ) -> StreamingResponse:
    """The API's event stream (routes/events.py), for the session's user, while its
    session lasts (checked every RECHECK_S; the stream keeps no session alive)."""
    ctx = ctx_of(request)
    secret = request.cookies.get(session.SESSION_COOKIE, "")

    def alive() -> bool:
        try:
            return auth.authenticate(ctx, secret).token_id == caller.who.token_id
        except CorralError:
            return False

    return event_routes.stream_for(request, caller.who, ctx, None, alive=alive)
