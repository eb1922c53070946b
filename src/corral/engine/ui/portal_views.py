"""What the user portal's pages show: the create-VM form (the images, templates and
networks a project may use, its quota use) and a VM's snapshots as a tree.

The form is checked here before anything is submitted: the request model's own checks,
then the project's quotas (services/quotas.py, the same counts the create checks again
under its lock); an error is kept with the form field it concerns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from corral.api import Image, VmCreate
from corral.api.snapshots import Snapshot
from corral.engine.context import EngineContext
from corral.engine.db.models import Project as ProjectRow
from corral.engine.routes.deps import visible
from corral.engine.services import images, networks, quotas
from corral.engine.services.auth import Principal
from corral.engine.ui import views
from corral.errors import CorralError, InvalidInput

# The API's field (a 422's or 409's ``field``, a quota's name) -> the form's field.
FORM_FIELD = {"image": "source", "iso": "source", "template": "source", "cpus": "cpus",
              "vcpus": "cpus", "memory": "memory", "disk": "disk", "network": "network",
              "name": "name", "vms": "name", "project": "project", "cloud_init": "ssh_key",
              "ssh_authorized_keys": "ssh_key", "user": "user"}
QUOTA_SHOWN = ("vms", "vcpus", "memory", "disk")


@dataclass
class QuotaUse:
    quota: str
    use: int
    limit: int | None

    @property
    def percent(self) -> int:
        return 0 if not self.limit else min(100, self.use * 100 // self.limit)


@dataclass
class CreateForm:
    """The form's choices for one project, what was typed, and the errors by field."""

    projects: list[str]
    project: str
    images: list[Image]
    templates: list[Image]
    networks: list[str]
    quota: list[QuotaUse]
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    def quota_data(self) -> dict[str, list[int | None]]:
        """Quota -> [use, limit]: for the page's early warning (ui.js)."""
        return {q.quota: [q.use, q.limit] for q in self.quota}


DEFAULTS = {"name": "", "source": "", "cpus": "1", "memory": "512M", "disk": "",
            "network": "default", "ssh_key": "", "user": "", "start": "on"}


def create_form(ctx: EngineContext, who: Principal, project: str,
                values: dict[str, str] | None = None) -> CreateForm:
    """The choices of a project where the caller may create VMs (the first such one when
    ``project`` is not one of them)."""
    allowed = views.projects_with(ctx, who, "vm.create")
    if project not in allowed:
        project = "default" if "default" in allowed else (allowed[0] if allowed else "")
    usable = [project]
    every = [i for i in visible(images.list_images(ctx), usable)
             if i.status == "ready" and i.format != "iso"]
    templates = [i for i in every if i.template_vm]
    shown = {n.name for n in visible(networks.list_networks(ctx), usable)}
    with ctx.db.session() as s:
        use = quotas.usage(s, project) if project else {}
        row = s.query(ProjectRow).filter_by(name=project).one_or_none()
        limits: dict[str, Any] = (row.quotas or {}) if row is not None else {}
    quota = [QuotaUse(q, use.get(q, 0), None if limits.get(q) is None else int(limits[q]))
             for q in QUOTA_SHOWN]
    return CreateForm(projects=allowed, project=project,
                      images=[i for i in every if not i.template_vm], templates=templates,
                      networks=sorted(shown), quota=quota,
                      values={**DEFAULTS, **(values or {})})


def request_of(form: CreateForm) -> VmCreate | None:
    """The API request the form makes, or None with ``form.errors`` filled."""
    v = form.values
    cloud: dict[str, Any] = {}
    if v["user"].strip():
        cloud["user"] = v["user"].strip()
    keys = [line.strip() for line in v["ssh_key"].splitlines() if line.strip()]
    if keys:
        cloud["ssh_authorized_keys"] = keys
    if not v["source"]:
        form.errors["source"] = "Choose an image or a template."
    if not v["name"].strip():
        form.errors["name"] = "Give the VM a name."
    body: dict[str, Any] = {"name": v["name"].strip(), "image": v["source"] or None,
                            "network": v["network"], "memory": v["memory"].strip(),
                            "start": v.get("start") == "on",
                            "cloud_init": cloud or None}
    try:
        body["cpus"] = int(v["cpus"])
    except ValueError:
        form.errors["cpus"] = "A whole number of vCPUs (1 to 64)."
    if v["disk"].strip():
        body["disk"] = v["disk"].strip()
    if form.errors:
        return None
    try:
        req = VmCreate.model_validate(body)
        _ = req.memory_mib, req.disk_bytes  # sizes are parsed on use: a bad one is a 422
        return req
    except ValidationError as exc:
        for err in exc.errors():
            where = [str(p) for p in err["loc"]]
            name = next((FORM_FIELD[p] for p in reversed(where) if p in FORM_FIELD), "name")
            form.errors.setdefault(name, str(err["msg"]).removeprefix("Value error, "))
    except CorralError as exc:
        form.errors[FORM_FIELD.get(exc.field or "", "name")] = exc.message
    return None


def check_quota(form: CreateForm, req: VmCreate, image_size: int | None) -> None:
    """Refuse, next to its field, what would pass one of the project's quotas (the create
    checks it again under the project's lock)."""
    disk = req.disk_bytes or image_size or 0
    asked = {"vms": 1, "vcpus": req.cpus, "memory": req.memory_mib * quotas.MIB, "disk": disk}
    for q in form.quota:
        more = asked[q.quota]
        if q.limit is not None and q.use + more > q.limit:
            form.errors[FORM_FIELD[q.quota]] = (
                f"Project {form.project}'s quota of {_shown(q.quota, q.limit)} would be "
                f"passed: {_shown(q.quota, q.use)} used, this needs {_shown(q.quota, more)}.")


def _shown(quota: str, value: int) -> str:
    if quota == "vms":
        return f"{value} VM" + ("" if value == 1 else "s")
    if quota == "vcpus":
        return f"{value} vCPU" + ("" if value == 1 else "s")
    return f"{value / (1 << 30):.1f} GiB" if value >= 1 << 30 else f"{value >> 20} MiB"


def image_size(form: CreateForm, name: str) -> int | None:
    return next((i.virtual_size for i in form.images + form.templates if i.name == name), None)


def error_field(exc: CorralError) -> str:
    """Which form field an API error concerns (a quota's by the quota it names)."""
    quota = exc.details.get("quota") if exc.details else None
    if isinstance(quota, str) and quota in FORM_FIELD:
        return FORM_FIELD[quota]
    return FORM_FIELD.get(exc.field or "", "name")


@dataclass
class SnapshotNode:
    snap: Snapshot
    depth: int


def snapshot_tree(snaps: list[Snapshot]) -> list[SnapshotNode]:
    """Depth-first, children under their parent, oldest first (as `vm snapshot list`)."""
    children: dict[str | None, list[Snapshot]] = {}
    names = {s.name for s in snaps}
    for s in sorted(snaps, key=lambda s: s.created_at):
        children.setdefault(s.parent if s.parent in names else None, []).append(s)
    out: list[SnapshotNode] = []
    stack = [(s, 0) for s in reversed(children.get(None, []))]
    while stack and len(out) <= len(snaps):  # bounded: each snapshot once
        snap, depth = stack.pop()
        out.append(SnapshotNode(snap, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(snap.name, [])))
    return out


def check_snapshot_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("give the snapshot a name", field="name")
    return name
