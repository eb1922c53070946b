"""Checks of cloud-init input at the API edge: each bad value is an InvalidInput naming its field.

The checks the API types run (pydantic validators, which FastAPI runs on the server's event
loop) are cheap: sizes, patterns. The YAML of user-data and network-config is parsed (with a
bounded cost, :func:`corral.cloudinit.yamlout.load_mapping`) when the seed is rendered, which
the engine does once when the settings are written, in a worker thread, never on a read.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any

from corral.cloudinit.yamlout import load_mapping
from corral.errors import InvalidInput

MAX_HOSTNAME = 253
MAX_KEYS = 32
MAX_KEY_LEN = 16 * 1024
MAX_DOC = 256 * 1024  # user-data / network-config, bytes (UTF-8)

_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HASH = re.compile(r"^\$(1|2[abxy]|5|6|y|gy|7|sha1|md5)\$[./A-Za-z0-9$=,+-]{8,500}$")
KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def hostname(value: str, field: str) -> str:
    """RFC 1123: dot-separated labels of letters, digits and '-', at most 253 characters."""
    if not value or len(value) > MAX_HOSTNAME:
        raise InvalidInput(f"{field} must be 1 to {MAX_HOSTNAME} characters", field=field)
    for label in value.removesuffix(".").split("."):
        if not _LABEL.fullmatch(label):
            raise InvalidInput(
                f"{field} {value!r} is not a valid host name (RFC 1123: labels of 1-63 letters, "
                "digits and '-', not starting or ending with '-')",
                field=field,
            )
    return value


def user(value: str, field: str) -> str:
    if not _USER.fullmatch(value):
        raise InvalidInput(
            f"{field} {value!r} is not a valid user name (lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32 characters)",
            field=field,
        )
    return value


def password_hash(value: str, field: str) -> str:
    if not _HASH.fullmatch(value):
        raise InvalidInput(
            f"{field} must be a crypt(3) hash such as $6$salt$... (make one with "
            "`openssl passwd -6` or `mkpasswd -m sha-512`), never a plain password",
            field=field,
        )
    return value


def ssh_key(value: str, field: str) -> str:
    """One OpenSSH public key line: ``TYPE BASE64 [comment]`` whose blob names the same type."""
    value = value.strip()
    if len(value) > MAX_KEY_LEN or _CONTROL.search(value):
        raise InvalidInput(f"{field} must be one line of at most {MAX_KEY_LEN} characters", field=field)
    parts = value.split(None, 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidInput(
            f"{field} does not look like an SSH public key ('ssh-ed25519 AAAA... comment'; "
            "give the .pub file, not the private key)",
            field=field,
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        inner = ""
    if inner != parts[0]:
        raise InvalidInput(f"{field}: the key data is not a valid {parts[0]} key", field=field)
    return value


def ssh_keys(values: list[str], field: str) -> list[str]:
    if len(values) > MAX_KEYS:
        raise InvalidInput(f"{field} holds more than {MAX_KEYS} keys", field=field)
    return [ssh_key(v, f"{field}[{i}]") for i, v in enumerate(values)]


def _size(value: str, field: str) -> None:
    if len(value.encode()) > MAX_DOC:
        raise InvalidInput(f"{field} is larger than {MAX_DOC // 1024} KiB", field=field)


def is_cloud_config(text: str) -> bool:
    return text.startswith("#cloud-config")


def user_data(value: str, field: str) -> str:
    """Any user-data cloud-init takes, at most MAX_DOC bytes (a ``#cloud-config`` one must be a
    YAML mapping: checked when rendered, see the module's docstring)."""
    _size(value, field)
    if not is_cloud_config(value) and not value.strip():
        raise InvalidInput(f"{field} is empty", field=field)
    return value


def network_config(value: str, field: str) -> str:
    """At most MAX_DOC bytes (its YAML is checked when rendered: :func:`network_document`)."""
    _size(value, field)
    return value


def network_document(value: str, field: str) -> dict[str, Any]:
    """Network config version 1 or 2 (optionally under a top-level ``network:`` key), parsed;
    the wrapper is taken off (as cloud-init does)."""
    _size(value, field)
    data = load_mapping(value, field, "network-config")
    if set(data) == {"network"} and isinstance(data["network"], dict):
        data = data["network"]
    if data.get("version") not in (1, 2):
        raise InvalidInput(f"{field} must say 'version: 1' or 'version: 2' (cloud-init network "
                           "config)", field=field)
    return data


def key_file_hint(value: str, field: str) -> str:
    if len(value) > 4096 or _CONTROL.search(value):
        raise InvalidInput(f"{field} must be a path of at most 4096 characters", field=field)
    return value
