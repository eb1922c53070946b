"""Where a node keeps its files, and how clients find a node (URL, CA, token)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path("/var/lib/corral")
USER_CONFIG = Path.home() / ".config" / "corral" / "client.json"


def default_data_dir() -> Path:
    env = os.environ.get("CORRAL_DATA_DIR")
    if env:
        return Path(env)
    return machine_data_dir()


def machine_data_dir() -> Path:
    """This user's own node (`corral up` without --data-dir), whatever CORRAL_DATA_DIR says."""
    if os.geteuid() == 0:
        return DEFAULT_DATA_DIR
    return Path.home() / ".local" / "share" / "corral"


@dataclass(frozen=True)
class NodePaths:
    data_dir: Path

    @property
    def client_config(self) -> Path:
        return self.data_dir / "client.json"

    @property
    def import_dir(self) -> Path:
        """Where image and OVA imports may read local files by default (corral.safepaths)."""
        return self.data_dir / "import"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def agent_dir(self) -> Path:
        return self.data_dir / "agent"

    @property
    def engine_pid(self) -> Path:
        return self.data_dir / "engine.pid"

    @property
    def agent_pid(self) -> Path:
        return self.data_dir / "agent.pid"

    @property
    def log(self) -> Path:
        return self.data_dir / "corral.log"

    @property
    def agent_log(self) -> Path:
        return self.data_dir / "agent.log"


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file only its owner reads (tokens, keys), replacing it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def client_config_file(data_dir: Path | None = None) -> Path | None:
    """The client.json that load_client_config reads: the node's data dir's, else
    ~/.config/corral's; None when there is none."""
    candidates = [data_dir] if data_dir else []
    if not data_dir and not os.environ.get("CORRAL_DATA_DIR") and USER_CONFIG.exists():
        candidates.append(USER_CONFIG.parent)
    if not candidates or data_dir is None:
        candidates.append(default_data_dir())
    for d in candidates:
        f = d / "client.json" if d is not None else None
        if f is not None and f.exists():
            return f
    return None


def with_session(cfg: dict[str, Any]) -> dict[str, Any]:
    """A client config whose `corral login` session, while there is one, beats its token."""
    if cfg.get("session_token"):
        cfg["token"] = cfg["session_token"]
    return cfg


def load_client_config(data_dir: Path | None = None) -> dict[str, Any]:
    """{url, ca, token}: from the node's data dir, else ~/.config/corral; env vars override."""
    f = client_config_file(data_dir)
    cfg: dict[str, Any] = with_session(json.loads(f.read_text())) if f is not None else {}
    if os.environ.get("CORRAL_URL"):
        cfg["url"] = os.environ["CORRAL_URL"]
    if os.environ.get("CORRAL_TOKEN"):
        cfg["token"] = os.environ["CORRAL_TOKEN"]
    if os.environ.get("CORRAL_CA"):
        cfg["ca"] = os.environ["CORRAL_CA"]
    return cfg
