"""Permissions and the built-in roles: what each route may require (routes/deps.py `require`).

A permission is ``resource.action``. Every route names the one it needs on its decorator;
a role is a set of permissions. The roles are nested (viewer ⊂ user ⊂ operator ⊂ admin), so
capping a token by its user's role is taking the lesser of the two.
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
    "vm.delete",
    "snapshot.read", "snapshot.create", "snapshot.revert", "snapshot.delete",
    "vm_group.read", "vm_group.create", "vm_group.delete",
    "image.read", "image.create", "image.update", "image.delete",
    "template.read", "template.create", "template.delete",
    "network.read", "network.attach", "network.create", "network.delete",
    "sg.read", "sg.create", "sg.update", "sg.delete",
    "pool.read", "pool.create", "pool.delete",
    "volume.read", "volume.create", "volume.update", "volume.delete",
    "host.read", "host.create", "host.update", "host.delete",
    "user.read", "user.create", "user.update", "user.delete",
)


def expand(*patterns: str) -> frozenset[str]:
    """The permissions matching any of the patterns (``vm.*``, ``*.read``)."""
    return frozenset(p for p in PERMISSIONS if any(fnmatchcase(p, pat) for pat in patterns))


_READS = expand("*.read") - {"user.read"}  # who the users are is the admins' business

# Least to most: the order a token's role is capped in.
ROLES: dict[str, frozenset[str]] = {
    "viewer": _READS,
    "user": _READS | expand("vm.*", "snapshot.*", "volume.*", "network.attach",
                            "operation.cancel"),
    "operator": expand("*") - expand("user.*", "host.*") | {"host.read"},
    "admin": expand("*"),
}
ROLE_NAMES: tuple[str, ...] = tuple(ROLES)


def check_role(role: str, field: str = "role") -> str:
    if role not in ROLES:
        raise InvalidInput(f"role {role!r}: one of {', '.join(ROLE_NAMES)}", field=field)
    return role


def cap(role: str, limit: str) -> str:
    """The lesser of two roles: a token never does more than its user may."""
    return min(role, limit, key=ROLE_NAMES.index)


def allowed(role: str, permission: str) -> bool:
    return permission == SELF or permission in ROLES.get(role, frozenset())
