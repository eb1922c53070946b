"""A private PostgreSQL server (Debian's ``postgresql`` package, installed by
scripts/install-deps.sh) for the tests that must hold on PostgreSQL as on SQLite.

One server per test session: ``initdb`` into a temporary directory, listening only on a unix
socket in that directory (no TCP port to collide with), trusted local logins, no fsync
(the data is thrown away). Each test gets a database of its own (:meth:`PgServer.database`),
dropped afterwards. The server is stopped and its directory removed on exit, also when a
test fails. PostgreSQL refuses to run as root: as root, the server runs as the ``postgres``
system user the package creates.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 30.0
PORT = 5432  # only names the socket file (.s.PGSQL.5432) in the private directory


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's programs; a clear failure when there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                           "run scripts/install-deps.sh, which installs Debian's postgresql")
    return Path(found[-1]).parent


def _die_with_parent() -> None:
    """In the child before exec: a test run that is killed does not leave postgres behind."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class PgServer:
    root: Path  # socket directory; the cluster is in root / "data"
    bindir: Path
    user: str | None  # the system user the server runs as (None: this process's)
    proc: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str = "postgres") -> str:
        """The SQLAlchemy URL of a database (psycopg 3, over the unix socket)."""
        return f"postgresql+psycopg://postgres@/{dbname}?host={self.root}&port={PORT}"

    def _psql(self, sql: str) -> None:
        done = subprocess.run([str(self.bindir / "psql"), "-h", str(self.root), "-p", str(PORT),
                               "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                               "-q", "-c", sql], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed ({done.returncode}): {done.stderr.strip()}")

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database; its URL. Dropped on exit, even with connections left open
        (an engine the test did not dispose of)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._psql(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        data = self.root / "data"
        done = subprocess.run([str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres",
                               "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                              capture_output=True, text=True, timeout=120, user=self.user)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        log = (self.root / "postgres.log").open("wb")
        self.proc = subprocess.Popen(  # in the foreground, ours to stop
            [str(self.bindir / "postgres"), "-D", str(data), "-k", str(self.root),
             "-p", str(PORT), "-c", "listen_addresses=", "-c", "max_connections=300",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            user=self.user, preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited at start: "
                                   + (self.root / "postgres.log").read_text()[-2000:])
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-h", str(self.root),
                                    "-p", str(PORT), "-U", "postgres", "-t", "1"],
                                   capture_output=True, timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT_S} s: "
                           + (self.root / "postgres.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: rolls back, disconnects all
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@contextmanager
def running_postgres() -> Iterator[PgServer]:
    """A PostgreSQL server of its own; gone, with its directory, on exit."""
    bindir = pg_bindir()
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="corral-pg-"))
    if user is not None:
        os.chown(root, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    server = PgServer(root=root, bindir=bindir, user=user)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
