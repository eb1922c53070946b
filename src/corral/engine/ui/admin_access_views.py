"""What the access admin pages' forms show: the projects list with its create form and
Delete buttons, a project's quota form (use beside each limit) and role assignments, a
user's page with its assignments, the roles page with its create form.

They start from the read-only pages of admin_views.py and add the forms and buttons the
caller's role allows (the same permissions the routes of admin_access_forms.py declare)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

from corral.api.projects import ProjectInfo, QuotaSet
from corral.engine.access import DEFAULT_PROJECT
from corral.engine.context import EngineContext
from corral.engine.permissions import ALL_PROJECTS
from corral.engine.services import projects, roles, users
from corral.engine.services.auth import Principal
from corral.engine.ui import admin_views as av
from corral.engine.ui import filters, views
from corral.engine.ui.forms import Form, sentence
from corral.errors import InvalidInput
from corral.validation import parse_size

QUOTA_LABELS = {"vms": "VMs", "vcpus": "vCPUs", "memory": "Memory", "disk": "Disk",
                "volumes": "Volumes", "snapshots": "Snapshots", "networks": "Networks",
                "security_groups": "Security groups"}
SIZES = ("memory", "disk")  # bytes in the API; a size with a unit in the form, as the CLI
SETTABLE = tuple(q for q in av.QUOTA_ORDER if q in QuotaSet.model_fields)  # the API's model
_COUNT = re.compile(r"[0-9]{1,19}")
_ZERO = re.compile(r"0+\s*[KMGTPkmgtp]?(i?B)?")  # 0, 0G: nothing may be used (as the CLI)
_LIMIT_MAX = 1 << 62  # QuotaSet's largest limit
_UNITS = (("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10))


@dataclass
class QuotaRow:
    quota: str
    label: str
    used: str  # what the project uses now (and which part of its limit)
    limit: str  # the input's text: a count, or a size with its unit ("": no limit)
    limited: bool  # a meter then
    percent: int

    @property
    def extra(self) -> str:
        """The input's attributes."""
        kind = "" if self.quota in SIZES else ' inputmode="numeric"'
        return f'maxlength="24" autocomplete="off" placeholder="no limit"{kind}'


# -- quotas ---------------------------------------------------------------------------------

def limit_text(quota: str, limit: int | None) -> str:
    """A limit as the form shows it and reads it back: sizes in the largest exact unit."""
    if limit is None:
        return ""
    if quota not in SIZES or limit == 0:
        return str(limit)
    for unit, bits in _UNITS:
        if limit % (1 << bits) == 0:
            return f"{limit >> bits}{unit}"
    return f"{limit} bytes"  # not a whole KiB (set through the API): shown, left as it is


def quota_rows(p: ProjectInfo, typed: dict[str, str] | None = None) -> list[QuotaRow]:
    rows = []
    for q in av.QUOTA_ORDER:
        if q not in p.usage:
            continue
        use, limit = p.usage.get(q, 0), p.quotas.get(q)
        human = filters.size if q in SIZES else str
        percent = filters.percent(use, limit) if limit else (100 if use else 0)
        shown = human(use) if limit is None else f"{human(use)} of {human(limit)} ({percent} %)"
        rows.append(QuotaRow(q, QUOTA_LABELS.get(q, q), shown,
                             (typed or {}).get(q, limit_text(q, limit)), limit is not None,
                             percent))
    return rows


def _limit(quota: str, text: str) -> int | None:
    if not text:
        return None  # no limit, as the API's null
    if quota in SIZES:
        if _ZERO.fullmatch(text):
            return 0
        return parse_size(text, QUOTA_LABELS[quota], most=_LIMIT_MAX)
    if not _COUNT.fullmatch(text):
        raise InvalidInput("a whole number (0 or more), or empty for no limit", field=quota)
    return int(text)


def quota_changes(p: ProjectInfo, typed: dict[str, str]) -> tuple[dict[str, int | None],
                                                                   dict[str, str]]:
    """The limits the form changed (a field not sent, or left as shown, is left out: it
    stays) and the errors by field."""
    changes: dict[str, int | None] = {}
    errors: dict[str, str] = {}
    for q in SETTABLE:
        text = typed.get(q)
        if text is None or text == limit_text(q, p.quotas.get(q)):
            continue
        try:
            changes[q] = _limit(q, text)
        except InvalidInput as exc:
            errors[q] = sentence(exc.message)
    return changes, errors


# -- pages ----------------------------------------------------------------------------------

def projects_page(ctx: EngineContext, who: Principal, create: Form | None = None,
                  notice: str = "") -> av.Page:
    """The list, a Delete button on each project but ``default``, the create form."""
    page = av.projects_page(ctx, who)
    table = page.tables[0]
    if views.may(who, "project.delete"):
        table.actions = [[av.Action(
            "Delete", f"/projects/{av.quote_name(row[0].text)}/delete",
            f"Delete project {row[0].text}? Its role assignments and the API tokens bound to "
            "it go too. Refused while it holds VMs, networks, images, volumes or security "
            "groups.", danger=True)] if row[0].text != DEFAULT_PROJECT else []
            for row in table.rows]
    page.extra = "_project_create.html"
    page.values = {"create": create or Form({"name": "", "description": ""}),
                   "notice": notice}
    return page


def project_page(ctx: EngineContext, who: Principal, name: str, quota: Form | None = None,
                 assign: Form | None = None) -> av.Page:
    """The project's facts; its quotas as a form (use beside each limit) for a role with
    project.update; its role assignments with Remove and an assign form for role.update."""
    page = av.project_page(ctx, who, name)  # 404 for one the caller does not see
    p = projects.show(ctx, name, who.access)
    may_quota = views.may(who, "project.update")
    if may_quota:  # the form shows what the read-only table did
        page.tables = [t for t in page.tables if t.ident != "quotas"]
    may_assign = views.may(who, "role.update")
    for table in page.tables:
        if table.ident == "assignments" and may_assign:
            # the project is the path's (and the audit log's: request.state)
            table.actions = [[_remove(
                f"/projects/{av.quote_name(name)}/roles/remove?"
                + urlencode({"subject": row[0].text, "role": row[2].text}),
                row[0].text, row[2].text, name)] for row in table.rows]
    page.extra = "_project_access.html"
    page.values = {
        "project": name, "may_quota": may_quota, "may_assign": may_assign,
        "quota": quota or Form(), "quota_rows": quota_rows(p, quota.values if quota else None),
        "assign": assign or Form({"subject": "", "role": "user"}),
        "user_options": _user_options(ctx, who), "role_options": role_options(ctx)}
    return page


def user_page(ctx: EngineContext, who: Principal, name: str,
              assign: Form | None = None) -> av.Page:
    """A user: its engine-wide role and the roles assigned to it, project by project."""
    u = users.get(ctx, name)  # 404 for none
    assigned = roles.list_assignments(ctx, subject=name) if views.may(who, "role.read") else []
    may_assign = views.may(who, "role.update")
    rows = [[av.Cell(_scope(a.project), None if a.project == ALL_PROJECTS
                     else f"/projects/{av.quote_name(a.project)}"), av.Cell(a.role),
             av.Cell(av.ago(a.created_at))] for a in assigned]
    # ?project= : the audit log's project too (engine/audit.py)
    actions = [[_remove(f"/users/{av.quote_name(name)}/roles/remove?"
                        + urlencode({"project": a.project, "role": a.role}),
                        name, a.role, a.project)] for a in assigned] if may_assign else []
    tables = [av.Table("Role assignments", ["Project", "Role", "Since"], rows,
                       "No roles assigned: only its engine-wide role counts.", "assignments",
                       actions)] if views.may(who, "role.read") else []
    seen = [(p.name, p.name) for p in projects.list_projects(ctx, who.access)]
    return av.Page(
        f"User {name}", "access", [("Users", "/users")],
        facts=[("Role (engine-wide)", u.role), ("Source", u.source),
               ("Password", "yes" if u.has_password else "no (API tokens only)"),
               ("Created", av.ago(u.created_at))],
        tables=tables, extra="_user_roles.html",
        values={"user": name, "may_assign": may_assign,
                "project_options": [("", "choose…"), (ALL_PROJECTS, "every project (*)"),
                                    *seen],
                "role_options": role_options(ctx),
                "assign": assign or Form({"project": "", "role": "user"})})


def roles_page(ctx: EngineContext, who: Principal, create: Form | None = None,
               notice: str = "") -> av.Page:
    """The roles, a Delete button on each custom one and the create form (role.update)."""
    page = av.roles_page(ctx, who)
    table = page.tables[0]
    if views.may(who, "role.update"):
        table.actions = [[] if row[1].text == "built-in" else [av.Action(
            "Delete", f"/roles/{av.quote_name(row[0].text)}/delete",
            f"Delete role {row[0].text}? Refused while a user, a role assignment or an API "
            "token holds it.", danger=True)] for row in table.rows]
    page.extra = "_role_create.html"
    page.values = {"create": create or Form({"name": "", "description": "",
                                             "permissions": ""}),
                   "notice": notice}
    return page


def role_options(ctx: EngineContext) -> list[tuple[str, str]]:
    """Every role but ``none`` (which grants nothing: the API refuses to assign it)."""
    return [(r.name, r.name + (" (custom)" if not r.builtin else ""))
            for r in roles.list_roles(ctx) if r.name != "none"]


def _user_options(ctx: EngineContext, who: Principal) -> list[tuple[str, str]] | None:
    """The users to choose from (None: the caller may not list users, it types a name)."""
    if not views.may(who, "user.read"):
        return None
    return [("", "choose…"), *((u.name, u.name) for u in users.list_users(ctx))]


def _scope(project: str) -> str:
    return "every project (*)" if project == ALL_PROJECTS else project


def _remove(url: str, subject: str, role: str, project: str) -> av.Action:
    """Remove one assignment (``url`` carries what names it in its query)."""
    where = "on every project" if project == ALL_PROJECTS else f"in project {project}"
    whom = f"group {subject}" if subject.startswith(roles.GROUP_MARK) else subject
    return av.Action("Remove", url, f"Remove role {role} from {whom} {where}? It no longer "
                     "holds from its next request on.", danger=True,
                     aria=f"Remove role {role} of {subject}")
