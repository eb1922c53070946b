"""A shared directory pool: a directory every host mounts at the same path (NFS in production).

Volumes are files as in a dir pool, and since every host opens the same files, VMs on them
live-migrate without copying. corral does not mount anything: the path must exist on every
host. To prove the hosts really share it, the first host writes a marker file
``.corral-pool.json`` (the pool's id and name) and every other host must read it back; a
directory that only looks shared (a local directory at the same path) is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from corral.agent.pools.base import PoolSpec
from corral.agent.pools.dir import DirPool
from corral.errors import Conflict, InvalidInput

MARKER = ".corral-pool.json"


class SharedPool(DirPool):
    def __init__(self, spec: PoolSpec, reserved: tuple[Path, ...] = ()) -> None:
        super().__init__(spec, reserved)
        self.marker = self.root / MARKER

    def _marker_id(self) -> str | None:
        try:
            return str(json.loads(self.marker.read_text()).get("id"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):
            return "?"

    def check(self) -> None:
        if not self.root.is_dir():
            raise Conflict(f"shared pool path {self.root} is not a directory on this host: "
                           "mount the shared storage there first", field="path")
        super().check()
        found = self._marker_id()
        if found is not None and found != self.spec.id:
            raise Conflict(f"{self.root} already belongs to another corral pool ({self.marker} "
                           "names it); give each pool its own directory", field="path")

    def setup(self, marker: str = "write") -> dict[str, Any]:
        self.check()
        if marker == "write":
            if self._marker_id() is None:
                tmp = self.root / f".{MARKER}.part"
                tmp.write_text(json.dumps({"id": self.spec.id, "name": self.spec.name}) + "\n")
                os.replace(tmp, self.marker)
        elif marker == "verify":
            if self._marker_id() != self.spec.id:
                raise Conflict(f"this host does not see pool {self.spec.name}'s marker in "
                               f"{self.root}: the directory is not shared with the host that "
                               "wrote it (is the shared storage mounted here?)", field="path")
        else:
            raise InvalidInput(f"marker must be write or verify, not {marker!r}", field="marker")
        return {}

    def teardown(self) -> None:
        if self._marker_id() == self.spec.id:
            self.marker.unlink(missing_ok=True)
