"""Validation of what offline customization writes into a guest (hostnames, users, paths...).

Pure functions raising InvalidInput with the field at fault; the API types call them so a
bad value is a 422 before anything runs, and the agent calls them again before building
the ``virt-customize`` command line (it is an API of its own).
"""

from __future__ import annotations

import base64
import binascii
import re

from corral.errors import InvalidInput

HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MODE_RE = re.compile(r"^0?[0-7]{3}$")
PASSWORD_MAX = 256
COMMAND_MAX = 4096
PATH_MAX = 1024
FILES_MAX_BYTES = 1 << 20  # all injected files together (they travel in the API request)
ITEMS_MAX = 32  # files, passwords or commands in one request


def hostname(value: str, field: str = "hostname") -> str:
    if not HOSTNAME_RE.match(value):
        raise InvalidInput(f"{field} {value!r} is not a valid host name (letters, digits, '-', "
                           "dots between labels of at most 63 characters)", field=field)
    return value


def user(value: str, field: str = "user") -> str:
    if not USER_RE.match(value):
        raise InvalidInput(f"{field} {value!r} is not a valid user name (a-z, 0-9, '_', '-', "
                           "starting with a letter or '_', at most 32 characters)", field=field)
    return value


def password(value: str, field: str = "password") -> str:
    if not value:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(value) > PASSWORD_MAX:
        raise InvalidInput(f"{field} is longer than {PASSWORD_MAX} characters", field=field)
    if any(c in value for c in "\n\r\0"):
        raise InvalidInput(f"{field} must be a single line", field=field)
    return value


def guest_path(value: str, field: str = "path") -> str:
    """An absolute path inside the guest, without '..' or control characters."""
    if not value.startswith("/") or value.endswith("/"):
        raise InvalidInput(f"{field} {value!r} must be an absolute file path in the guest",
                           field=field)
    if len(value) > PATH_MAX or any(ord(c) < 32 for c in value) or ":" in value:
        raise InvalidInput(f"{field} {value!r} has a control character or ':', or is too long",
                           field=field)
    if ".." in value.split("/"):
        raise InvalidInput(f"{field} {value!r} must not contain '..'", field=field)
    return value


def mode(value: str, field: str = "mode") -> str:
    if not MODE_RE.match(value):
        raise InvalidInput(f"{field} {value!r} must be an octal mode like 0644", field=field)
    return value.rjust(4, "0")


def content(value: str, field: str = "content") -> bytes:
    """Base64 content of a file -> bytes."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} must be base64", field=field) from None


def command(value: str, field: str = "command") -> str:
    if not value.strip():
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(value) > COMMAND_MAX or "\0" in value:
        raise InvalidInput(f"{field} is longer than {COMMAND_MAX} characters or has a NUL",
                           field=field)
    return value
