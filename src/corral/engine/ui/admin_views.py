"""What the admin pages show: hosts, networks, security groups, storage pools and volumes,
images and templates, projects (with their quotas), users, roles and the audit log.

Each page is a list of tables and facts (one template, admin.html, draws them all) read
through the same services as the API, filtered by the same access: a project-scoped
resource (network, group, volume, image) of a project the caller may not read is left
out of its list and answers 404 on its own page, as in the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from corral.api import Image, Operation, Pool
from corral.api.security_groups import SgRule
from corral.engine.context import EngineContext
from corral.engine.services import (
    audit,
    host_settings,
    hosts,
    images,
    networks,
    pools,
    projects,
    roles,
    security_groups,
    users,
    vms,
    volumes,
)
from corral.engine.services.auth import Principal
from corral.engine.ui import filters, views
from corral.engine.ui.forms import Form
from corral.errors import NotFound

T = TypeVar("T")
DASH = "\N{EN DASH}"  # nothing to show


@dataclass
class Cell:
    text: str
    href: str | None = None
    badge: bool = False  # a state: drawn as a badge
    mono: bool = False
    num: bool = False


@dataclass
class Action:
    """A button posting to ``url`` (with our confirmation naming the object when
    ``confirm``); the page comes back with the operation started."""

    label: str
    url: str
    confirm: str = ""
    danger: bool = False
    aria: str = ""  # the button's accessible name, where "label + the row's first cell" is not one


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    empty: str = "None."
    ident: str = ""  # the section's id (tests and links find it)
    actions: list[list[Action]] = field(default_factory=list)  # each row's buttons, if any


@dataclass
class Page:
    title: str
    nav: str  # the top bar's current entry
    crumbs: list[tuple[str, str]] = field(default_factory=list)
    intro: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    tabs: list[tuple[str, str]] = field(default_factory=list)  # (label, href) of sibling pages
    extra: str = ""  # a template with the page's own form (user create, audit filters)
    more: str = ""  # a link to the next page of a long list
    values: dict[str, Any] = field(default_factory=dict)  # what the extra form shows


def quote_name(name: str) -> str:
    """A name as one segment of a page's URL (a ``/`` in it too)."""
    return quote(name, safe="")


def ago(when: datetime | None) -> str:
    """How long ago, or a dash for never."""
    return filters.ago(when) if when else DASH


def _project_cell(project: str, shared: bool = False) -> Cell:
    return Cell(project + (" (shared)" if shared else ""))


# -- hosts ----------------------------------------------------------------------------------

def hosts_page(ctx: EngineContext) -> Page:
    rows = [[Cell(h.name, f"/hosts/{quote_name(h.name)}"), Cell(h.status.value, badge=True),
             Cell(h.address or h.url, mono=True), Cell(str(h.allocated.vms), num=True),
             Cell(f"{h.allocated.cpus} / {h.cpus or '?'}", num=True),
             Cell(filters.mib(h.memory_mib), num=True), Cell(", ".join(h.tags) or DASH),
             Cell(ago(h.last_seen))] for h in hosts.list_hosts(ctx)]
    return Page("Hosts", "hosts", intro="Hosts of this engine: their state, VMs and facts.",
                tables=[Table("Hosts", ["Host", "State", "Address", "VMs", "vCPUs allocated",
                                        "Memory", "Tags", "Last report"], rows,
                              "No hosts have joined (`corral host add`).", "hosts")])


def host_page(ctx: EngineContext, who: Principal, name: str) -> Page:
    h = host_settings.show(ctx, name)
    facts = [("State", h.status.value), ("Address", h.address or h.url),
             ("CPU", f"{h.cpus or '?'} CPUs, {h.cpu_model or 'model unknown'}"
              + (f" ({h.cpu_vendor})" if h.cpu_vendor else "")),
             ("Memory", f"{filters.mib(h.memory_mib)}, {filters.mib(h.memory_free_mib)} free"),
             ("Hypervisor", (h.virt_type or DASH).upper() + (f" — {h.virt_note}" if h.virt_note
                                                            else "")),
             ("libvirt / QEMU", f"{h.libvirt_version or '?'} / {h.qemu_version or '?'}"),
             ("corral", h.corral_version or "?"), ("NUMA nodes", str(len(h.numa_nodes) or DASH)),
             ("Tags", ", ".join(h.tags) or DASH), ("Last report", ago(h.last_seen))]
    on_it = [v for v in vms.list_vms(ctx, views.projects_with(ctx, who, "vm.read"))
             if v.host == h.name]
    rows = [[Cell(v.name, f"/vms/{quote_name(views.vm_full_name(v))}"),
             Cell(str(v.state), badge=True), Cell(v.project),
             Cell(f"{v.cpus} vCPU · {filters.mib(v.memory_mib)}")]
            for v in sorted(on_it, key=lambda v: (v.project, v.name))]
    actions = []
    if views.may(who, "host.update"):
        if h.status.value in ("maintenance", "evacuating"):
            actions.append(Action("Activate", f"/hosts/{quote_name(name)}/activate"))
        else:
            actions.append(Action("Maintenance", f"/hosts/{quote_name(name)}/maintenance",
                                  f"Put host {name} in maintenance? Its VMs move to other "
                                  "hosts and no new VM is placed on it until it is activated.",
                                  danger=True))
    return Page(f"Host {name}", "hosts", [("Hosts", "/hosts")], facts=facts, actions=actions,
                tables=[Table("Virtual machines on it", ["VM", "State", "Project", "Size"],
                              rows, "No VM you may see runs here.", "host-vms")],
                # live graphs (ui/graphs.py): the host's CPU and its VMs' sums
                extra="_graphs.html", values={"stats_url": f"/ui/hosts/{quote_name(name)}/stats"})


# -- networks and security groups -----------------------------------------------------------

def _visible(ctx: EngineContext, who: Principal, permission: str, items: list[T]) -> list[T]:
    mine = set(views.projects_with(ctx, who, permission))
    return [i for i in items if getattr(i, "project", "") in mine or getattr(i, "shared", False)]


def _one(ctx: EngineContext, who: Principal, permission: str, what: str, item: object) -> None:
    project = getattr(item, "project", "default")
    if not (views.may(who, permission, project) or getattr(item, "shared", False)):
        raise NotFound(f"{what} not found")


NET_TABS = [("Networks", "/networks"), ("Security groups", "/security-groups")]


def networks_page(ctx: EngineContext, who: Principal) -> Page:
    rows = [[Cell(n.name, f"/networks/{quote_name(n.name)}"), _project_cell(n.project, n.shared),
             Cell(str(n.mode.value)), Cell(n.subnet or DASH, mono=True), Cell(n.bridge, mono=True),
             Cell(str(len(n.vms)), num=True), Cell(n.status, badge=True)]
            for n in _visible(ctx, who, "network.read", networks.list_networks(ctx))]
    return Page("Networks", "networks", tabs=NET_TABS, tables=[Table(
        "Networks", ["Network", "Project", "Mode", "Subnet", "Bridge", "NICs", "State"], rows,
        "No networks.", "networks")], extra="_network_form.html",  # admin_network_forms.py
        values=_create_form(_creatable(ctx, who, "network.create"),
                            {"mode": "nat", "backend": "linuxbridge"}))


def _creatable(ctx: EngineContext, who: Principal, permission: str) -> list[str]:
    """The projects a create form offers (none: no form)."""
    if permission not in who.access.anywhere():
        return []
    return views.projects_with(ctx, who, permission)


def _create_form(projects: list[str], defaults: dict[str, str] | None = None) -> dict[str, Any]:
    """A create form's values: its projects (as options) and the empty form (the first
    project chosen)."""
    return {"projects": [(p, p) for p in projects],
            "form": Form({"project": projects[0], **(defaults or {})} if projects else {})}


def network_operations(ctx: EngineContext, who: Principal, name: str,
                       project: str) -> list[Operation]:
    """The network's newest create and delete operations (each panel follows its own
    progress), for a caller who may read its project's operations."""
    if not views.may(who, "operation.read", project):
        return []
    found = [op for kind in ("network.create", "network.delete")
             for op in ctx.ops.listing(type_=kind, limit=20, projects=[project],
                                       engine_wide=False)
             if name in op.resources.get("networks", [])]
    return sorted(found, key=lambda op: op.created_at, reverse=True)[:3]


def network_page(ctx: EngineContext, who: Principal, name: str) -> Page:
    n = networks.get(ctx, name)
    _one(ctx, who, "network.read", f"network {name}", n)
    facts = [("Project", n.project + (" (shared with every project)" if n.shared else "")),
             ("Mode", f"{n.mode.value}, {n.backend.value}"), ("Subnet", n.subnet or DASH),
             ("Gateway", n.gateway or DASH),
             ("DHCP", f"{n.dhcp_start} to {n.dhcp_end}" if n.dhcp_start else "off"),
             ("Bridge", n.bridge), ("VLAN / VNI", f"{n.vlan or DASH} / {n.vni or DASH}"),
             ("MTU", str(n.mtu or "default")), ("DNS domain", n.dns_domain or DASH),
             ("State", n.status)]
    users_rows = [[Cell(v)] for v in n.vms]
    res = [[Cell(r.ip, mono=True), Cell(r.mac, mono=True), Cell(r.vm or DASH)]
           for r in n.reservations] if n.reservations else []
    actions = []
    if views.may(who, "network.delete", n.project) and not n.vms:
        actions.append(Action("Delete", f"/networks/{quote_name(name)}/delete",
                              f"Delete network {name}?", danger=True))
    return Page(f"Network {name}", "networks", [("Networks", "/networks")], facts=facts,
                actions=actions, tables=[Table("VMs attached", ["VM"], users_rows,
                                               "No VM is attached.", "net-vms"),
                                         Table("Static addresses", ["IP", "MAC", "VM"], res,
                                               "None reserved.", "net-res")],
                extra="_network_ops.html",
                values={"ops": network_operations(ctx, who, name, n.project)})


def groups_page(ctx: EngineContext, who: Principal) -> Page:
    rows = [[Cell(g.name, f"/security-groups/{quote_name(g.name)}"), Cell(g.project),
             Cell(str(len(g.rules)), num=True), Cell(str(len(g.nics)), num=True),
             Cell(g.description or DASH)]
            for g in _visible(ctx, who, "sg.read", security_groups.list_groups(ctx))]
    return Page("Security groups", "sgs", tabs=NET_TABS, tables=[Table(
        "Security groups", ["Group", "Project", "Rules", "NICs", "Description"], rows,
        "No security groups.", "sgs")], extra="_sg_form.html",  # admin_network_forms.py
        values=_create_form(_creatable(ctx, who, "sg.create")))


def rule_text(r: SgRule) -> str:
    """A rule in words, as its confirmation names it: ``ingress tcp 22 from 0.0.0.0/0``."""
    ports = "" if r.port_min is None else (
        f" {r.port_min}" if r.port_max in (None, r.port_min) else f" {r.port_min}-{r.port_max}")
    other = r.cidr or (f"group {r.remote_group}" if r.remote_group else "anywhere")
    return (f"{r.direction.value} {r.protocol.value}{ports} "
            f"{'from' if r.direction.value == 'ingress' else 'to'} {other}")


def group_page(ctx: EngineContext, who: Principal, name: str) -> Page:
    g = security_groups.get(ctx, name)
    _one(ctx, who, "sg.read", f"security group {name}", g)
    rows = [[Cell(r.direction.value), Cell(r.protocol.value),
             Cell("any" if r.port_min is None else (
                 str(r.port_min) if r.port_max in (None, r.port_min)
                 else f"{r.port_min}-{r.port_max}")),
             Cell(r.cidr or (f"group {r.remote_group}" if r.remote_group else "anywhere"),
                  mono=True)] for r in g.rules]
    may_update = views.may(who, "sg.update", g.project)
    base = f"/security-groups/{quote_name(name)}"
    buttons = [[Action("Remove", f"{base}/rules/{quote_name(r.id)}/delete",
                       f"Remove rule {rule_text(r)} from security group {name}? It stops "
                       "applying to the group's NICs at once.", danger=True,
                       aria=f"Remove rule {rule_text(r)}")] if may_update else []
               for r in g.rules]
    actions = []
    if views.may(who, "sg.delete", g.project):
        actions.append(Action("Delete", f"{base}/delete", f"Delete security group {name}? "
                              "Refused while NICs are in it or other groups' rules name it.",
                              danger=True))
    remotes = [o.name for o in _visible(ctx, who, "sg.read", security_groups.list_groups(ctx))]
    return Page(f"Security group {name}", "sgs", [("Security groups", "/security-groups")],
                facts=[("Project", g.project), ("Description", g.description or DASH),
                       ("NICs in it", str(len(g.nics)))], actions=actions,
                tables=[Table("Rules", ["Direction", "Protocol", "Ports", "From / to"], rows,
                              "No rules: nothing is let in.", "sg-rules",
                              buttons if may_update else [])],
                extra="_sg_rule_form.html",  # admin_network_forms.py
                values={"url": f"{base}/rules", "groups": [(r, r) for r in remotes],
                        "form": Form({"direction": "ingress", "protocol": "tcp"})}
                if may_update else {})


# -- storage --------------------------------------------------------------------------------

def _usage(p: Pool) -> str:
    if p.capacity is None or p.allocation is None:
        return "host not answering"
    return f"{filters.size(p.allocation)} of {filters.size(p.capacity)} " \
           f"({filters.percent(p.allocation, p.capacity)} %)"


def pools_page(ctx: EngineContext) -> Page:
    rows = [[Cell(p.name, f"/pools/{quote_name(p.name)}"), Cell(p.type.value),
             Cell(p.status, badge=True), Cell(p.host or "shared"), Cell(_usage(p)),
             Cell(str(p.volumes), num=True)]
            for p in pools.list_pools(ctx)]
    return Page("Storage pools", "pools", tables=[Table(
        "Storage pools", ["Pool", "Type", "State", "Host", "Used", "Volumes"], rows,
        "No storage pools.", "pools")])


def pool_page(ctx: EngineContext, who: Principal, name: str) -> Page:
    p = pools.get(ctx, name)
    facts = [("Type", p.type.value), ("State", p.status), ("Host", p.host or "every host"),
             ("Where", p.path or f"{p.ceph_pool} ({p.ceph_conf})"), ("Used", _usage(p)),
             ("Available", filters.size(p.available)), ("Created", ago(p.created_at))]
    tables = []
    if "volume.read" in who.access.anywhere():
        vols = _visible(ctx, who, "volume.read", volumes.list_volumes(ctx, name))
        rows = [[Cell(v.name), Cell(v.project), Cell(v.format.value),
                 Cell(filters.size(v.size), num=True), Cell(filters.size(v.allocation), num=True),
                 Cell(v.vm or DASH), Cell(v.status, badge=True)] for v in vols]
        tables.append(Table("Volumes", ["Volume", "Project", "Format", "Size", "Written",
                                        "Attached to", "State"], rows, "No volumes.",
                            "volumes"))
    return Page(f"Pool {name}", "pools", [("Storage pools", "/pools")], facts=facts,
                tables=tables)


# -- images ---------------------------------------------------------------------------------

def images_page(ctx: EngineContext, who: Principal) -> Page:
    every = _visible(ctx, who, "image.read", images.list_images(ctx))

    def row(i: Image) -> list[Cell]:
        return [Cell(i.name, f"/images/{quote_name(i.name)}"), _project_cell(i.project, i.shared),
                Cell(i.format), Cell(filters.size(i.virtual_size), num=True),
                Cell(filters.size(i.file_size), num=True), Cell(i.status, badge=True),
                Cell(ago(i.created_at))]
    cols = ["Image", "Project", "Format", "Size", "On disk", "State", "Created"]
    return Page("Images and templates", "images", tables=[
        Table("Images", cols, [row(i) for i in every if not i.template_vm],
              "No images (`corral image import`).", "images"),
        Table("Templates", cols, [row(i) for i in every if i.template_vm],
              "No templates (`corral template create`).", "templates")])


def image_page(ctx: EngineContext, who: Principal, name: str) -> Page:
    i = images.get(ctx, name)
    _one(ctx, who, "image.read", f"image {name}", i)
    facts = [("Project", i.project + (" (shared with every project)" if i.shared else "")),
             ("Format", i.format), ("Size", filters.size(i.virtual_size)),
             ("On disk", filters.size(i.file_size)), ("State", i.status),
             ("Made from VM", i.template_vm or DASH), ("Created", ago(i.created_at))]
    actions = []
    perm = "template.delete" if i.template_vm else "image.delete"
    if views.may(who, perm, i.project):
        actions.append(Action("Delete", f"/images/{quote_name(name)}/delete",
                              f"Delete {'template' if i.template_vm else 'image'} {name}? "
                              "Refused while VMs use it.", danger=True))
    return Page(f"{'Template' if i.template_vm else 'Image'} {name}", "images",
                [("Images and templates", "/images")], facts=facts, actions=actions)


# -- projects, users, roles -----------------------------------------------------------------

QUOTA_ORDER = ("vms", "vcpus", "memory", "disk", "volumes", "snapshots", "networks",
               "security_groups")


def _quota_text(quota: str, use: int, limit: int | None) -> str:
    shown = filters.size if quota in ("memory", "disk") else str
    return f"{shown(use)} of {shown(limit)}" if limit is not None else f"{shown(use)}, no limit"


def access_tabs(who: Principal) -> list[tuple[str, str]]:
    return [(label, href) for label, href, perm in (
        ("Projects", "/projects", "project.read"), ("Users", "/users", "user.read"),
        ("Roles", "/roles", "role.read")) if views.may(who, perm)]


def projects_page(ctx: EngineContext, who: Principal) -> Page:
    rows = [[Cell(p.name, f"/projects/{quote_name(p.name)}"), Cell(p.description or DASH),
             Cell(_quota_text("vms", p.usage.get("vms", 0), p.quotas.get("vms")), num=True),
             Cell(_quota_text("vcpus", p.usage.get("vcpus", 0), p.quotas.get("vcpus")),
                  num=True),
             Cell(_quota_text("memory", p.usage.get("memory", 0), p.quotas.get("memory")),
                  num=True)]
            for p in projects.list_projects(ctx, who.access)]
    return Page("Projects", "access", tabs=access_tabs(who), tables=[Table(
        "Projects", ["Project", "Description", "VMs", "vCPUs", "Memory"], rows,
        "No projects.", "projects")])


def project_page(ctx: EngineContext, who: Principal, name: str) -> Page:
    p = projects.show(ctx, name, who.access)
    quota_rows = [[Cell(q), Cell(_quota_text(q, p.usage.get(q, 0), p.quotas.get(q)), num=True),
                   Cell(f"{filters.percent(p.usage.get(q, 0), p.quotas.get(q))} %"
                        if p.quotas.get(q) else DASH, num=True)]
                  for q in QUOTA_ORDER if q in p.usage]
    tables = [Table("Quotas", ["Quota", "Use", "Used"], quota_rows, "", "quotas")]
    if views.may(who, "role.read"):
        assigned = roles.list_assignments(ctx, project=name)
        tables.append(Table("Role assignments", ["Subject", "Kind", "Role", "Since"],
                            [[Cell(a.subject), Cell(a.kind), Cell(a.role), Cell(ago(a.created_at))]
                             for a in assigned], "No roles assigned in this project "
                            "(engine-wide roles apply).", "assignments"))
    holds = ", ".join(f"{n} {k}" for k, n in p.holds.items() if n) or "nothing"
    return Page(f"Project {name}", "access", [("Projects", "/projects")],
                facts=[("Description", p.description or DASH), ("Holds", holds),
                       ("Created", ago(p.created_at))], tables=tables)


def users_page(ctx: EngineContext, who: Principal) -> Page:
    may_delete = views.may(who, "user.delete")
    every = users.list_users(ctx)
    rows = [[Cell(u.name, f"/users/{quote_name(u.name)}"), Cell(u.role), Cell(u.source),
             Cell("yes" if u.has_password else "no"), Cell(ago(u.created_at))] for u in every]
    buttons = [[Action("Delete", f"/users/{quote_name(u.name)}/delete",
                       f"Delete user {u.name}? Its sessions and tokens end.", danger=True)]
               if may_delete and u.name != who.user else [] for u in every]
    return Page("Users", "access", tabs=access_tabs(who), tables=[Table(
        "Users", ["User", "Role (engine-wide)", "Source", "Password", "Created"], rows,
        "No users.", "users", buttons)], extra="_user_form.html")


def roles_page(ctx: EngineContext, who: Principal) -> Page:
    rows = [[Cell(r.name), Cell("built-in" if r.builtin else "custom"),
             Cell(r.description or DASH), Cell(", ".join(r.permissions) or "none")]
            for r in roles.list_roles(ctx)]
    return Page("Roles", "access", tabs=access_tabs(who), tables=[Table(
        "Roles", ["Role", "Kind", "Description", "Permissions"], rows, "No roles.", "roles")])


# -- audit ----------------------------------------------------------------------------------

@dataclass
class AuditFilter:
    user: str = ""
    project: str = ""
    action: str = ""


def audit_page(ctx: EngineContext, wanted: AuditFilter, before: int | None) -> Page:
    entries = audit.listing(ctx, user=wanted.user or None, project=wanted.project or None,
                            action=wanted.action or None, limit=100, before=before)
    rows = [[Cell(str(e.seq), num=True), Cell(ago(e.time)), Cell(e.user or DASH),
             Cell(e.project), Cell(e.action, mono=True), Cell(e.target, mono=True),
             Cell(str(e.status), num=True), Cell(e.error or DASH), Cell(e.client or DASH)]
            for e in entries]
    page = Page("Audit log", "audit", intro="Every change asked of the engine (refused ones "
                "too), logins and logouts; newest first.", extra="_audit_filter.html",
                tables=[Table("Records", ["#", "When", "User", "Project", "Action", "Target",
                                          "Status", "Error", "Client"], rows,
                              "No record matches.", "audit")])
    page.values = {"filter": wanted}
    if len(entries) == 100:
        query = {k: v for k, v in vars(wanted).items() if v}
        page.more = "/audit?" + urlencode({**query, "before": entries[-1].seq})
    return page
