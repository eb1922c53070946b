"""Permissions and the built-in roles: what each route may require (routes/deps.py `require`).

A permission is ``resource.action``. Every route names the one it needs on its decorator;
a role is a set of permissions (built in here, or custom: `corral role create`). Most
permissions act inside a project (the request's ``?project=``); the rest (hosts, pools,
users, roles, projects themselves, the audit log) act on the whole engine and need a role
given on every project (``*``) — but for reads, which any role of the caller's grants.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from corral.errors import InvalidInput

# Any valid token: the caller's own session, tokens and password (a viewer manages its own
# credentials too; what it may do with them stays capped by its role).
SELF = "self"

PERMISSIONS: tuple[str, ...] = (
    "status.read", "event.read", "operation.read", "operation.cancel",
    "vm.read", "vm.create", "vm.update", "vm.power", "vm.console", "vm.exec", "vm.export",
    "vm.delete", "vm.secrets", "vm.migrate",
    "snapshot.read", "snapshot.create", "snapshot.revert", "snapshot.delete",
    "vm_group.read", "vm_group.create", "vm_group.delete",
    "image.read", "image.create", "image.update", "image.delete",
    "template.read", "template.create", "template.delete",
    "network.read", "network.attach", "network.create", "network.delete",
    "sg.read", "sg.create", "sg.update", "sg.delete",
    "pool.read", "pool.create", "pool.delete",
    "volume.read", "volume.create", "volume.update", "volume.delete",
    "host.read", "host.create", "host.update", "host.delete",
    # host.fence: fence methods (BMC credentials) and their test; host.power: power a host
    # off and on through them. Admins only (host.*), as every other host change.
    "host.fence", "host.power",
    "user.read", "user.create", "user.update", "user.delete",
    "role.read", "role.update",
    "project.read", "project.create", "project.update", "project.delete",
    "audit.read", "cluster.read", "cluster.update",
)

# Permissions that act inside one project; the others act on the whole engine.
PROJECT_SCOPED: frozenset[str] = frozenset(
    p for p in PERMISSIONS
    if p.split(".")[0] in {"vm", "snapshot", "vm_group", "image", "template", "network",
                           "sg", "volume", "operation", "event"})
ALL_PROJECTS = "*"



def expand(*patterns: str) -> frozenset[str]:
    """The permissions matching any of the patterns (``vm.*``, ``*.read``)."""
    return frozenset(p for p in PERMISSIONS if any(fnmatchcase(p, pat) for pat in patterns))


# Who the users are, which roles exist and what was done is the admins' business.
_READS = expand("*.read") - expand("user.read", "role.read", "audit.read")

# The built-in roles, least to most (each holds every permission of the one before).
# ``none``: a user's global role when all it may do comes from role assignments.
ROLES: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "viewer": _READS,
    # vm.secrets (reading cloud-init user-data and password hashes back): operators up;
    # a user writes them, and reads them only in the guest it made. vm.migrate: where a VM
    # runs is the operators' business (hosts' room, maintenance).
    "user": _READS | expand("vm.*", "snapshot.*", "volume.*", "network.attach",
                            "operation.cancel") - {"vm.secrets", "vm.migrate"},
    "operator": (expand("*") - expand("user.*", "host.*", "role.*", "project.*", "audit.*",
                                      "cluster.*")
                 | {"host.read", "project.read", "cluster.read"}),
    "admin": expand("*"),
}
ROLE_NAMES: tuple[str, ...] = tuple(ROLES)


def check_permissions(patterns: list[str]) -> frozenset[str]:
    """The permissions a custom role's patterns name (``vm.*``); 422 for one naming none."""
    found: set[str] = set()
    for pat in patterns:
        hit = expand(pat)
        if not hit:
            raise InvalidInput(f"permission {pat!r} matches none (`corral role permissions` "
                               "lists them)", field="permissions")
        found |= hit
    return frozenset(found)


def check_role(role: str, field: str = "role", custom: dict[str, frozenset[str]] | None = None
               ) -> str:
    if role not in ROLES and role not in (custom or {}):
        known = [*ROLE_NAMES, *sorted(set(custom or {}) - set(ROLES))]
        raise InvalidInput(f"role {role!r}: one of {', '.join(known)}", field=field)
    return role


def allowed(role: str, permission: str) -> bool:
    return permission == SELF or permission in ROLES.get(role, frozenset())
