"""Project names, and the full names of VMs, which are unique per project.

Two projects may each have a VM ``web``. What the hosts know a VM by (its libvirt domain,
its disk and seed files, its RBD image) is its full name: the bare name in the ``default``
project (the names VMs had before projects, kept so that nothing on a host is renamed),
``PROJECT.NAME`` in the others. Names never hold a '.', so no two full names collide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from corral.engine.access import DEFAULT_PROJECT
from corral.engine.db.models import Project
from corral.errors import InvalidInput, NotFound
from corral.validation import validate_name

if TYPE_CHECKING:  # the context's modules import this one (operations: project_of)
    from corral.engine.context import EngineContext

SEP = "."


def check_name(name: str, field: str = "name") -> str:
    return validate_name(name, field)


def full_name(project: str, name: str) -> str:
    """What the hosts call the VM ``name`` of ``project``."""
    if project == "*":
        raise InvalidInput("a VM is named in one project: give ?project=NAME, not *",
                           field="project")
    validate_name(name, "name")
    return name if project == DEFAULT_PROJECT else f"{project}{SEP}{name}"


def bare_name(full: str) -> str:
    """The name a VM is shown by inside its project."""
    return full.partition(SEP)[2] if SEP in full else full


def project_of(full: str) -> str:
    """The project of a VM's full name."""
    return full.partition(SEP)[0] if SEP in full else DEFAULT_PROJECT


def project_of_resources(resources: Mapping[str, Sequence[str]]) -> str | None:
    """The project an operation on these resources belongs to: its VMs' (None: no VM, an
    operation on the engine's or a host's resources)."""
    vms = resources.get("vms") or []
    return project_of(vms[0]) if vms else None


def exists(ctx: EngineContext, name: str) -> bool:
    with ctx.db.session() as s:
        return s.query(Project.id).filter_by(name=name).first() is not None


def check_usable(row: Any, project: str, field: str) -> None:
    """A network, image or security group a resource of ``project`` uses: its own project's
    or one an admin shared; another project's is as if it did not exist (404)."""
    if row.project != project and not getattr(row, "shared", False):
        raise NotFound(f"{field} {row.name} not found in project {project}", field=field)
