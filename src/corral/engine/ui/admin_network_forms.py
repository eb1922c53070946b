"""The admin pages' network and security-group actions: create a network (an operation: the
browser goes to the network's page, which follows it), create and delete a security group,
add and remove its rules. The same services and permissions as the API's routes
(routes/networks.py, routes/security_groups.py); an object is checked again in its
project: 404 for one the caller may not read, 403 where its role may not change it. Bad
input is shown next to its field, the form keeping what was typed (never a 500)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from corral.api import NetworkCreate
from corral.api.security_groups import (
    SecurityGroup,
    SecurityGroupCreate,
    SgRuleCreate,
    parse_port_range,
)
from corral.engine.context import EngineContext
from corral.engine.services import networks
from corral.engine.services import security_groups as sgs
from corral.engine.ui import admin_views as av
from corral.engine.ui import session, views
from corral.engine.ui.routes import UiRoute, render, ui_need
from corral.engine.ui.session import Caller
from corral.errors import CorralError, Forbidden, InvalidInput, NotFound

router = APIRouter(route_class=UiRoute, include_in_schema=False)

GENERAL = "form"  # an error of no field of the form: said at its top
NET_MAIN = ("name", "project", "mode", "subnet")
NET_MORE = ("gateway", "dhcp_start", "dhcp_end", "dns_domain", "vlan", "backend", "bridge",
            "overlay", "vni")  # under "More options"
NET_NUMBERS = {"vlan": "VLAN tag", "vni": "VNI"}
SG_FIELDS = ("name", "project", "description")
RULE_FIELDS = ("direction", "protocol", "port", "cidr", "remote_group")
# the API's field (a pydantic loc, a CorralError's field) -> the rule form's
RULE_FIELD = {**{f: f for f in RULE_FIELDS}, "port_min": "port", "port_max": "port",
              "rule": GENERAL}


def _ctx(request: Request) -> EngineContext:
    ctx: EngineContext = request.app.state.ctx
    return ctx


def _page(request: Request, caller: Caller, page: av.Page, status: int) -> Response:
    return render(request, "admin.html", caller, status=status, page=page.nav, p=page)


def _back(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _sent(fields: Iterable[str], sent: dict[str, str], most: int = 1024) -> dict[str, str]:
    return {k: sent.get(k, "").strip()[:most] for k in fields}


def _where(fields: dict[str, str], name: object) -> str:
    """The form field an API error names (else the form's top)."""
    return fields.get(str(name), GENERAL)


def _validation(exc: ValidationError, fields: dict[str, str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        where = next((_where(fields, p) for p in err["loc"] if str(p) in fields), GENERAL)
        errors.setdefault(where, str(err["msg"]).removeprefix("Value error, "))
    return errors


def _refusal(exc: CorralError, fields: dict[str, str]) -> dict[str, str]:
    """An API refusal next to its field. A host that did not answer (502, 503: the agents'
    dry run, a rule's push) is said on the form too; any other server error is the error
    page."""
    if exc.status >= 500 and exc.status not in (502, 503):
        raise exc
    return {_where(fields, exc.field): exc.message}


def _project(caller: Caller, ctx: EngineContext, permission: str, asked: str,
             what: str) -> str | None:
    """The error for a create form's project (None: the caller may create there)."""
    if not asked:
        return "Choose a project."
    if asked not in views.projects_with(ctx, caller.who, permission):
        return f"You may not create {what} in project {asked}."
    return None


# -- networks -------------------------------------------------------------------------------

@router.post("/networks", response_class=HTMLResponse)
async def network_create(request: Request,
                         caller: Caller = Depends(ui_need("network.create"))) -> Response:
    """Create a network as `corral net create` does (an operation): its page follows it."""
    ctx = _ctx(request)
    form = _sent(NET_MAIN + NET_MORE, await session.form(request))
    errors: dict[str, str] = {}
    status = 422
    problem = _project(caller, ctx, "network.create", form["project"], "networks")
    if problem:
        errors["project"] = problem
    else:
        request.state.audit_project = form["project"]
    body: dict[str, Any] = {k: v for k, v in form.items() if v and k != "project"}
    for key, label in NET_NUMBERS.items():
        if key in body:
            if body[key].isdigit():
                body[key] = int(body[key])
            else:
                errors[key] = f"{label} {body.pop(key)!r} is not a number."
    if not form["name"]:
        errors["name"] = "Give the network a name."
        body["name"] = "unnamed"  # the other fields are still checked
    fields = {f: f for f in NET_MAIN + NET_MORE}
    try:  # every field's error at once; the engine's checks once they pass
        req = NetworkCreate.model_validate(body)
        if not errors:
            await run_in_threadpool(networks.create, ctx, req, form["project"])
    except ValidationError as exc:
        errors = _validation(exc, fields) | errors
    except CorralError as exc:
        errors, status = _refusal(exc, fields) | errors, exc.status
    if errors:
        page = av.networks_page(ctx, caller.who)
        page.values.update(form=form, errors=errors,
                           more_open=any(form[k] for k in NET_MORE if k != "backend")
                           or form["backend"] not in ("", "linuxbridge")
                           or any(k in errors for k in NET_MORE))
        return _page(request, caller, page, status)
    return _back(f"/networks/{quote(form['name'], safe='')}")


# -- security groups ------------------------------------------------------------------------

def _group(request: Request, caller: Caller, name: str, permission: str) -> SecurityGroup:
    """The group, if the caller may read it (else 404, as for none) and ``permission`` holds
    in its project (else 403)."""
    group = sgs.get(_ctx(request), name[:63])
    if not views.may(caller.who, "sg.read", group.project):
        raise NotFound(f"security group {group.name} not found")
    request.state.audit_project = group.project
    if not views.may(caller.who, permission, group.project):
        raise Forbidden(f"your role in project {group.project} does not allow this "
                        f"({permission})", permission=permission)
    return group


def _group_url(name: str) -> str:
    return f"/security-groups/{quote(name, safe='')}"


@router.post("/security-groups", response_class=HTMLResponse)
async def group_create(request: Request,
                       caller: Caller = Depends(ui_need("sg.create"))) -> Response:
    """A new group (egress to anywhere, no ingress): its page, where rules are added."""
    ctx = _ctx(request)
    form = _sent(SG_FIELDS, await session.form(request))
    errors: dict[str, str] = {}
    status = 422
    problem = _project(caller, ctx, "sg.create", form["project"], "security groups")
    if problem:
        errors["project"] = problem
    else:
        request.state.audit_project = form["project"]
    if not form["name"]:
        errors["name"] = "Give the group a name."
    fields = {f: f for f in SG_FIELDS}
    try:  # every field's error at once; the engine's checks once they pass
        req = SecurityGroupCreate(name=form["name"] or "unnamed",
                                  description=form["description"])
        if not errors:
            await run_in_threadpool(sgs.create, ctx, req, form["project"])
    except ValidationError as exc:
        errors = _validation(exc, fields) | errors
    except CorralError as exc:
        errors, status = _refusal(exc, fields) | errors, exc.status
    if errors:
        page = av.groups_page(ctx, caller.who)
        page.values.update(form=form, errors=errors)
        return _page(request, caller, page, status)
    return _back(_group_url(form["name"]))


@router.post("/security-groups/{name}/delete", response_class=HTMLResponse)
async def group_delete(request: Request, name: str,
                       caller: Caller = Depends(ui_need("sg.delete"))) -> Response:
    """Refused (409, said on the page) while NICs are in it or other groups' rules name it."""
    group = _group(request, caller, name, "sg.delete")
    await run_in_threadpool(sgs.delete, _ctx(request), group.name)
    return _back("/security-groups")


def _rule(form: dict[str, str], ctx: EngineContext, caller: Caller) -> SgRuleCreate:
    """The rule the form asks for; ValidationError or CorralError (with its field) if bad."""
    low = high = None
    if form["port"]:
        try:
            low, high = parse_port_range(form["port"])
        except ValueError as exc:
            raise InvalidInput(str(exc).capitalize(), field="port") from None
    remote = form["remote_group"] or None
    if remote is not None:  # a group the caller may not read is as if there were none
        try:
            readable = views.may(caller.who, "sg.read", sgs.get(ctx, remote[:63]).project)
        except NotFound:
            readable = False
        if not readable:
            raise NotFound(f"security group {remote} not found", field="remote_group")
    return SgRuleCreate.model_validate({
        "direction": form["direction"], "protocol": form["protocol"] or "any",
        "port_min": low, "port_max": high, "cidr": form["cidr"] or None,
        "remote_group": remote})


@router.post("/security-groups/{name}/rules", response_class=HTMLResponse)
async def rule_add(request: Request, name: str,
                   caller: Caller = Depends(ui_need("sg.update"))) -> Response:
    """Add an allow rule, applied to the group's NICs at once (as `corral sg rule add`)."""
    ctx = _ctx(request)
    group = _group(request, caller, name, "sg.update")
    form = _sent(RULE_FIELDS, await session.form(request))
    status = 422
    try:
        req = await run_in_threadpool(_rule, form, ctx, caller)
        await run_in_threadpool(sgs.add_rule, ctx, group.name, req)
    except ValidationError as exc:
        errors = _validation(exc, RULE_FIELD)
    except CorralError as exc:
        errors, status = _refusal(exc, RULE_FIELD), exc.status
    else:
        return _back(_group_url(group.name))
    page = av.group_page(ctx, caller.who, group.name)
    page.values.update(form=form, errors=errors)
    return _page(request, caller, page, status)


@router.post("/security-groups/{name}/rules/{rule_id}/delete", response_class=HTMLResponse)
async def rule_remove(request: Request, name: str, rule_id: str,
                      caller: Caller = Depends(ui_need("sg.update"))) -> Response:
    group = _group(request, caller, name, "sg.update")
    await run_in_threadpool(sgs.remove_rule, _ctx(request), group.name, rule_id[:64])
    return _back(_group_url(group.name))
