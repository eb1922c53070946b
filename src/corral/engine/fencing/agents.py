"""Where a fence agent is found: by its name alone, in the system's sbin directories, next to
the running Python (a virtual environment's console scripts: fence_corral_lab), then PATH.
A name with a '/' or any other odd character is refused: the engine runs what it finds as
root, so what it may run is only ever looked up, never given."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from corral.errors import InvalidInput

_NAME = re.compile(r"fence_[a-z0-9][a-z0-9_-]{0,62}")
SYSTEM_DIRS = (Path("/usr/sbin"), Path("/usr/local/sbin"))


def check_name(name: str, field: str = "agent") -> str:
    """The agent's name as given; 422 unless it is ``fence_`` + letters, digits, _ or -."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"fence agent {name!r}: a name like fence_ipmilan (fence_ then "
                           "lowercase letters, digits, _ or -; no path)", field=field)
    return name


def search_dirs() -> list[Path]:
    dirs = [*SYSTEM_DIRS, Path(sys.executable).parent]
    dirs += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    return dirs


def find_agent(name: str, field: str = "agent") -> Path:
    """The agent's executable; 422 for a bad name or one no directory has."""
    check_name(name, field)
    for d in search_dirs():
        path = d / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise InvalidInput(f"fence agent {name} not found in /usr/sbin, /usr/local/sbin, "
                   f"{Path(sys.executable).parent} or PATH (Debian: apt-get install "
                   "fence-agents)", field=field)
