"""Validation of names and sizes that reach paths, interface names or XML."""

from __future__ import annotations

import re

from corral.errors import InvalidInput

NAME_MAX = 63
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SIZE_RE = re.compile(r"^\s*(\d{1,20})\s*([KMGTP]?)(i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
# The largest disk or volume (qcow2 and RBD go further; the database's BIGINT holds 8 EiB):
# a size above it is a typo, refused at the edge instead of overflowing below.
SIZE_MAX = 1 << 50  # 1 PiB
MEMORY_MAX = 16 << 40  # 16 TiB, KVM's guest limit on x86-64


def validate_name(value: object, field: str = "name") -> str:
    """A resource name: 1-63 ASCII letters, digits, '-' or '_', starting with a letter or digit."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    if not value:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(value) > NAME_MAX:
        raise InvalidInput(f"{field} is longer than {NAME_MAX} characters", field=field)
    if not _NAME_RE.fullmatch(value):
        raise InvalidInput(
            f"{field} {value!r} may hold only ASCII letters, digits, '-' and '_', "
            "and must start with a letter or digit",
            field=field,
        )
    return value


def validate_vm_name(value: object, field: str = "vm") -> str:
    """A VM's full name, as hosts know it: ``NAME`` (the default project) or
    ``PROJECT.NAME``, each part a name (engine/projects.py)."""
    if isinstance(value, str) and value.count(".") == 1:
        project, _, name = value.partition(".")
        validate_name(project, field)
        validate_name(name, field)
        return value
    return validate_name(value, field)


def parse_size(value: object, field: str, default_unit: str = "M", most: int = SIZE_MAX) -> int:
    """Parse '512M', '2G', '1024' (in ``default_unit``) into bytes, in 1..``most``, or
    InvalidInput."""
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a size like 512M or 2G", field=field)
    if isinstance(value, int):
        number, unit = value, default_unit
    elif isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if not m:
            raise InvalidInput(
                f"{field} {value!r} is not a size; use a number with K, M, G or T (e.g. 512M)",
                field=field,
            )
        number, unit = int(m.group(1)), (m.group(2).upper() or default_unit)
    else:
        raise InvalidInput(f"{field} must be a size like 512M or 2G", field=field)
    if number <= 0:
        raise InvalidInput(f"{field} must be greater than zero", field=field)
    size = number * _UNITS[unit]
    if size > most:
        raise InvalidInput(f"{field} {value!r} is more than the largest allowed, "
                           f"{_shown(most)}", field=field)
    return size


def _shown(size: int) -> str:
    unit = next(u for u in "PTGMK" if size % _UNITS[u] == 0)
    return f"{size // _UNITS[unit]}{unit}"
