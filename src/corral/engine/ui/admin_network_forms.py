"""The admin pages' network and security-group actions: create a network (an operation: the
browser goes to the network's page, which follows it), create and delete a security group,
add and remove its rules. The same services and permissions as the API's routes
(routes/networks.py, routes/security_groups.py); an object is checked again in its
project: 404 for one the caller may not read, 403 where its role may not change it. Bad
input is shown next to its field, the form keeping what was typed (never a 500)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
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
from corral.engine.ui import views
from corral.engine.ui.admin_common import back, check, project_form, show
from corral.engine.ui.forms import Form, same, submit, typed
from corral.engine.ui.routes import UiRoute, ctx_of, ui_need
from corral.engine.ui.session import Caller
from corral.errors import InvalidInput, NotFound

router = APIRouter(route_class=UiRoute, include_in_schema=False)

GENERAL = "form"  # an error of no field of the form: said at its top
NET_MAIN = ("name", "project", "mode", "subnet")
NET_MORE = ("gateway", "dhcp_start", "dhcp_end", "dns_domain", "vlan", "backend", "bridge",
            "overlay", "vni")  # under "More options"
NET_NUMBERS = {"vlan": "VLAN tag", "vni": "VNI"}
NET_FIELDS = same(NET_MAIN + NET_MORE)
SG_FIELDS = same(("name", "project", "description"))
RULE_INPUTS = ("direction", "protocol", "port", "cidr", "remote_group")
# the API's field (a pydantic loc, a CorralError's field) -> the rule form's
RULE_FIELDS = {**same(RULE_INPUTS), "port_min": "port", "port_max": "port", "rule": GENERAL}


# -- networks -------------------------------------------------------------------------------

@router.post("/networks", response_class=HTMLResponse)
async def network_create(request: Request,
                         caller: Caller = Depends(ui_need("network.create"))) -> Response:
    """Create a network as `corral net create` does (an operation): its page follows it."""
    ctx = ctx_of(request)
    form = await project_form(request, caller, NET_FIELDS, "network.create",
                              "create networks in")
    v = form.values
    body: dict[str, Any] = {k: text for k, text in v.items() if text and k != "project"}
    for key, label in NET_NUMBERS.items():
        if key in body:
            if body[key].isdigit():
                body[key] = int(body[key])
            else:
                form.errors[key] = f"{label} {body.pop(key)!r} is not a number."
    if not v["name"]:
        form.errors["name"] = "Give the network a name."
        body["name"] = "unnamed"  # the other fields are still checked
    _, status = await submit(form, NET_FIELDS, GENERAL,
                             lambda: NetworkCreate.model_validate(body),
                             lambda req: networks.create(ctx, req, v["project"]))
    if form.errors:
        page = av.networks_page(ctx, caller.who)
        page.values.update(form=form,
                           more_open=any(v[k] for k in NET_MORE if k != "backend")
                           or v["backend"] not in ("", "linuxbridge")
                           or any(k in form.errors for k in NET_MORE))
        return show(request, caller, page, status)
    return back(f"/networks/{av.quote_name(v['name'])}")


# -- security groups ------------------------------------------------------------------------

def _group(request: Request, caller: Caller, name: str, permission: str) -> SecurityGroup:
    """The group, if the caller may read it (else 404, as for none) and ``permission`` holds
    in its project (else 403)."""
    group = sgs.get(ctx_of(request), name[:63])
    if not views.may(caller.who, "sg.read", group.project):
        raise NotFound(f"security group {group.name} not found")
    request.state.audit_project = group.project
    check(caller, permission, group.project)
    return group


def _group_url(name: str) -> str:
    return f"/security-groups/{av.quote_name(name)}"


@router.post("/security-groups", response_class=HTMLResponse)
async def group_create(request: Request,
                       caller: Caller = Depends(ui_need("sg.create"))) -> Response:
    """A new group (egress to anywhere, no ingress): its page, where rules are added."""
    ctx = ctx_of(request)
    form = await project_form(request, caller, SG_FIELDS, "sg.create",
                              "create security groups in")
    v = form.values
    if not v["name"]:
        form.errors["name"] = "Give the group a name."
    _, status = await submit(
        form, SG_FIELDS, GENERAL,
        lambda: SecurityGroupCreate(name=v["name"] or "unnamed", description=v["description"]),
        lambda req: sgs.create(ctx, req, v["project"]))
    if form.errors:
        page = av.groups_page(ctx, caller.who)
        page.values.update(form=form)
        return show(request, caller, page, status)
    return back(_group_url(v["name"]))


@router.post("/security-groups/{name}/delete", response_class=HTMLResponse)
async def group_delete(request: Request, name: str,
                       caller: Caller = Depends(ui_need("sg.delete"))) -> Response:
    """Refused (409, said on the page) while NICs are in it or other groups' rules name it."""
    group = _group(request, caller, name, "sg.delete")
    await run_in_threadpool(sgs.delete, ctx_of(request), group.name)
    return back("/security-groups")


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
    ctx = ctx_of(request)
    group = _group(request, caller, name, "sg.update")
    form = Form(await typed(request, RULE_INPUTS))
    _, status = await submit(form, RULE_FIELDS, GENERAL,
                             lambda: _rule(form.values, ctx, caller),
                             lambda req: sgs.add_rule(ctx, group.name, req))
    if not form.errors:
        return back(_group_url(group.name))
    page = av.group_page(ctx, caller.who, group.name)
    page.values.update(form=form)
    return show(request, caller, page, status)


@router.post("/security-groups/{name}/rules/{rule_id}/delete", response_class=HTMLResponse)
async def rule_remove(request: Request, name: str, rule_id: str,
                      caller: Caller = Depends(ui_need("sg.update"))) -> Response:
    group = _group(request, caller, name, "sg.update")
    await run_in_threadpool(sgs.remove_rule, ctx_of(request), group.name, rule_id[:64])
    return back(_group_url(group.name))
