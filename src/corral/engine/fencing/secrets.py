"""Fence secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key made once in the
engine's data dir (``fence.key``, mode 0600, next to its TLS directory). The database alone
(a backup, a PostgreSQL replica) does not give the BMC passwords away."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from corral.errors import CorralError

KEY_FILE = "fence.key"
_lock = threading.Lock()


def is_secret(option: str) -> bool:
    """Options the fence-agents take as passwords (password, passwd, snmp_priv_passwd,
    community); their *_script variants are paths, not secrets."""
    name = option.lower()
    return ("passw" in name and not name.endswith("_script")) or name == "community"


def _key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    with _lock:
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return path.read_bytes().strip()


def seal(data_dir: Path, secrets: dict[str, str]) -> str | None:
    if not secrets:
        return None
    return Fernet(_key(data_dir)).encrypt(json.dumps(secrets).encode()).decode()


def unseal(data_dir: Path, token: str | None) -> dict[str, str]:
    if not token:
        return {}
    try:
        data = json.loads(Fernet(_key(data_dir)).decrypt(token.encode()))
    except InvalidToken as e:
        raise CorralError(f"fence secrets cannot be read with {data_dir / KEY_FILE} (was the "
                          "key file replaced?): set the method again") from e
    return {str(k): str(v) for k, v in data.items()}
