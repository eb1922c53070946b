"""Where `corral login` keeps its session token (and `corral project switch` the project to
act in): in the named remote's entry (remotes.json), or in the node's client.json (keys
``session_token``, ``project``) for the local node and ``--data-dir``. The token the config
had stays as it was: `corral logout` goes back to it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from corral import errors
from corral.client import remotes
from corral.node import paths


def _remote_name(remote: str | None) -> str | None:
    """The named remote a client without --data-dir talks to (None: a local config file),
    as remotes.resolve chooses it."""
    name = remote or os.environ.get("CORRAL_REMOTE") or None
    if name is None:
        if any(os.environ.get(v) for v in ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_DATA_DIR")):
            return None
        name = remotes.current()
    return None if name == remotes.LOCAL else name


def _config_file(remote: str | None, data_dir: Path | None) -> Path:
    if data_dir is None and (remote or os.environ.get("CORRAL_REMOTE")) == remotes.LOCAL:
        f = remotes.local_config_file()
    else:
        f = paths.client_config_file(data_dir)
    if f is None:
        raise errors.Unavailable("no client config to keep the session in: run `corral up`, "
                                 "or add a remote (`corral remote add`)")
    return f


def store(token: str | None, *, remote: str | None = None, data_dir: Path | None = None) -> str:
    """Keep a session token (None: forget it); where it went, in words."""
    name = _remote_name(remote) if data_dir is None else None
    if name is not None:
        remotes.set_session(name, token)
        return f"remote {name}"
    return _keep("session_token", token, remote, data_dir)


def store_project(project: str | None, *, remote: str | None = None,
                  data_dir: Path | None = None) -> str:
    """Keep the project `corral project switch` chose (None: back to the engine's default)
    next to the token; where it went, in words."""
    name = _remote_name(remote) if data_dir is None else None
    if name is not None:
        remotes.set_project(name, project)
        return f"remote {name}"
    return _keep("project", project, remote, data_dir)


def _keep(key: str, value: str | None, remote: str | None, data_dir: Path | None) -> str:
    f = _config_file(remote, data_dir)
    cfg = json.loads(f.read_text())
    if value is None:
        cfg.pop(key, None)
    else:
        cfg[key] = value
    tmp = f.with_name(f.name + ".tmp")
    paths.write_private(tmp, json.dumps(cfg, indent=2) + "\n")
    os.replace(tmp, f)
    return str(f)
