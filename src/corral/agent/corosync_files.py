"""The host's corosync files kept as the engine renders them (`corral agent run
--corosync-conf /etc/corosync/corosync.conf`): corral writes corosync's configuration as
hosts join and leave, so that an admin sets up corosync once per host and never edits it.

Each answer to a report carries the digest of the cluster's files; when it differs from this
host's, the agent fetches them (``GET /api/v1/agent/corosync``, mutual TLS), writes both
atomically (corosync.conf 0644, ``authkey`` beside it 0400) and, where corosync runs, has it
reload (`corosync-cfgtool -R`: the nodelist of a running corosync follows; a new host's
corosync is started by its admin, or its service manager, once the files are there).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from corral.agent.quorum import PIDFILE, corosync_runs
from corral.agent_api.reports import CorosyncFiles

log = logging.getLogger(__name__)

RELOAD_TIMEOUT_S = 10.0


def digest_of(conf: str, authkey: bytes) -> str:
    """As the engine counts it (engine/services/ha_corosync.py)."""
    return hashlib.sha256(conf.encode() + b"\0" + authkey).hexdigest()


class CorosyncKeeper:
    def __init__(self, conf: Path, pidfile: Path = PIDFILE,
                 reload_argv: tuple[str, ...] = ("corosync-cfgtool", "-R")) -> None:
        self.conf, self.authkey = conf, conf.parent / "authkey"
        self.pidfile, self.reload_argv = pidfile, reload_argv
        self.have = self._local_digest()

    def _local_digest(self) -> str | None:
        try:
            return digest_of(self.conf.read_text(), self.authkey.read_bytes())
        except (OSError, UnicodeDecodeError):
            return None

    def wants(self, digest: str | None) -> bool:
        """The engine's files differ from this host's."""
        return digest is not None and digest != self.have

    def write(self, files: CorosyncFiles) -> None:
        """Both files, each replaced at once (never half written); ValueError for files
        that do not match their own digest."""
        key = base64.b64decode(files.authkey, validate=True)
        if digest_of(files.conf, key) != files.digest:
            raise ValueError("the corosync files do not match their digest")
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        _replace(self.authkey, key, 0o400)
        _replace(self.conf, files.conf.encode(), 0o644)
        self.have = files.digest
        log.info("corosync: %s and %s written as the engine renders them", self.conf,
                 self.authkey)
        if corosync_runs(self.pidfile):
            proc = subprocess.run(list(self.reload_argv), capture_output=True, text=True,
                                  timeout=RELOAD_TIMEOUT_S, check=False)
            if proc.returncode != 0:
                log.warning("corosync: %s failed: %s", " ".join(self.reload_argv),
                            proc.stderr.strip() or proc.stdout.strip())


def _replace(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
