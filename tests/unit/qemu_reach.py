"""Directory pools refuse a path that QEMU's own user cannot reach (every parent directory
must be searchable by others); pytest makes its temporary directories 0700."""

from __future__ import annotations

import tempfile
from pathlib import Path


def let_qemu_reach(path: Path) -> None:
    """chmod g+x,o+x ``path`` and each parent up to pytest's per-user root (pytest-of-USER),
    which also holds the run's directory under pytest-xdist (pytest-N/popen-gwI/...); never
    above the system's temporary directory."""
    stop = Path(tempfile.gettempdir())
    for d in (path, *path.parents):
        if d == stop or d == d.parent:
            break
        d.chmod(d.stat().st_mode | 0o011)
        if d.name.startswith("pytest-of-"):
            break
