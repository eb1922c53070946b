"""Which local paths corral reads and writes on a host for a user, and where pools may be.

One policy for both sides: the engine checks at the API edge (a 422/409 naming the field,
before any operation exists), the agent checks again (it is the one with the filesystem).
Paths are judged after symlinks (``os.path.realpath``); a file that is read is opened
once, checked again after the open (``/proc/self/fd``) and then used only through that open
file (:meth:`PathPolicy.opened`), so swapping a symlink in after the check reads nothing else.

- Reads (image import from a path, OVA import): only below an import directory (by default
  ``DATA_DIR/import``; the admin adds others: ``corral up --import-dir``), never below
  corral's own directories (the engine's data dir, the agent's state dir) or a storage
  pool, unless an import directory is deeper (``DATA_DIR/import`` is in the data dir), and
  never below :data:`READ_DENIED`, whatever is configured.
- Writes (OVA export): anywhere but :data:`WRITE_DENIED` and corral's own directories.
- Pools: not a system directory (:data:`POOL_DENIED_EXACT`) nor below :data:`WRITE_DENIED`,
  not in corral's own directories (except below a host's ``STORAGE_DIR/pools``: where dir
  pools go by default), not inside another pool nor around one.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from corral.errors import Conflict, CorralError, InvalidInput

# Never read from, whatever the import directories are.
READ_DENIED = ("/proc", "/sys", "/dev", "/etc", "/boot", "/run", "/var/run")
# Never a configuration file for a host tool (ceph.conf is in /etc/ceph).
CONFIG_DENIED = ("/proc", "/sys", "/dev")
# Never written to, nor a pool's directory (or below).
WRITE_DENIED = (*READ_DENIED, "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/var/lib/libvirt")
# Never a pool's directory itself (what is below them may be).
POOL_DENIED_EXACT = ("/", "/home", "/root", "/tmp", "/var", "/var/lib", "/var/tmp")


def real(path: str | Path) -> Path:
    """The path with every symlink resolved (the parts that exist), made absolute."""
    return Path(os.path.realpath(path))


def within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _roots(paths: Iterable[str | Path]) -> list[Path]:
    """Each root as given and resolved (/var/run is /run, /lib may be /usr/lib)."""
    found: list[Path] = []
    for p in paths:
        for q in (Path(p), real(p)):
            if q not in found:
                found.append(q)
    return found


def _deepest(path: Path, roots: Iterable[Path]) -> Path | None:
    hits = [r for r in roots if within(path, r)]
    return max(hits, key=lambda r: len(r.parts)) if hits else None


def _absolute(path: str | Path, field: str) -> Path:
    p = Path(path)
    if not p.is_absolute():
        raise InvalidInput(f"{field} must be an absolute path", field=field)
    return p


def _shown(given: Path, resolved: Path) -> str:
    return str(given) if given == resolved else f"{given} (resolves to {resolved})"


@dataclass(frozen=True)
class PathPolicy:
    """The directories of one side (engine or agent) that the checks weigh."""

    import_dirs: tuple[Path, ...] = ()  # reads are allowed below these only
    protected: tuple[Path, ...] = ()  # corral's own: the engine data dir, the agent state dir
    pools: tuple[Path, ...] = ()  # storage pools' directories (never a source, never nested)
    pool_homes: tuple[Path, ...] = ()  # STORAGE_DIR/pools: dir pools may be made below

    # -- reads ---------------------------------------------------------------------------
    def check_read(self, path: str | Path, field: str) -> Path:
        """The resolved path of a file a user names for corral to read; InvalidInput if not
        allowed (it need not exist yet: :meth:`opened` checks that)."""
        given = _absolute(path, field)
        resolved = real(given)
        system = _deepest(resolved, _roots(READ_DENIED))
        if system is not None:
            raise InvalidInput(f"{field} {_shown(given, resolved)} is in {system}, a system "
                               "directory corral never reads from", field=field)
        allow = _deepest(resolved, _roots(self.import_dirs))
        if allow is None:
            dirs = ", ".join(str(d) for d in self.import_dirs) or "none configured"
            raise InvalidInput(
                f"{field} {_shown(given, resolved)} is not in an import directory ({dirs}): "
                "copy the file there, or add its directory (corral up --import-dir)",
                field=field)
        deny = _deepest(resolved, _roots((*self.protected, *self.pools)))
        if deny is not None and len(deny.parts) >= len(allow.parts):
            raise InvalidInput(f"{field} {_shown(given, resolved)} is in {deny}, corral's own "
                               "data or a storage pool: it is never a source", field=field)
        return resolved

    @contextlib.contextmanager
    def opened(self, path: str | Path, field: str) -> Iterator[Path]:
        """Check ``path`` (:meth:`check_read`), open it (no symlink at the end, no FIFO
        waits), check again what was opened, and yield a path to that open file
        (``/proc/PID/fd/N``: a child process such as qemu-img reads the same file, and a
        relative name inside it, like a VMDK extent, cannot reach its directory)."""
        resolved = self.check_read(path, field)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(resolved, flags)
        except OSError as exc:
            raise InvalidInput(f"{field} {path} is not a readable file on this host "
                               f"({exc.strerror or exc})", field=field) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInput(f"{field} {path} is not a regular file", field=field)
            if Path(os.readlink(f"/proc/self/fd/{fd}")) != resolved:
                raise InvalidInput(f"{field} {path} changed while corral opened it",
                                   field=field)
            pinned = Path(f"/proc/{os.getpid()}/fd/{fd}")
            try:
                yield pinned
            except CorralError as exc:  # what was said about the open file names the path
                if str(pinned) in exc.message:
                    exc.message = exc.message.replace(str(pinned), str(path))
                    exc.args = (exc.message,)
                raise
        finally:
            os.close(fd)

    def check_config(self, path: str | Path, field: str) -> Path:
        """A configuration file a host tool reads (an rbd pool's ceph.conf, normally in
        /etc/ceph): not a device or kernel file, not corral's own data."""
        given = _absolute(path, field)
        resolved = real(given)
        deny = _deepest(resolved, _roots(CONFIG_DENIED)) or \
            _deepest(resolved, _roots(self.protected))
        if deny is not None:
            raise InvalidInput(f"{field} {_shown(given, resolved)} is in {deny}: not a "
                               "configuration file corral passes on", field=field)
        return resolved

    # -- writes --------------------------------------------------------------------------
    def check_write(self, path: str | Path, field: str) -> Path:
        """The path of a file to create (its directory resolved, its own name as given)."""
        given = _absolute(path, field)
        resolved = real(given.parent) / given.name
        deny = _deepest(resolved, _roots(WRITE_DENIED)) or \
            _deepest(resolved, _roots(self.protected))
        if deny is not None:
            raise InvalidInput(f"{field} {_shown(given, resolved)} is in {deny}: corral does "
                               "not write files there", field=field)
        return resolved

    # -- pools ---------------------------------------------------------------------------
    def check_pool(self, path: str | Path, field: str = "path") -> Path:
        """The resolved directory of a new pool; InvalidInput (a system or corral directory)
        or Conflict (inside or around another pool)."""
        given = _absolute(path, field)
        resolved = real(given)
        if resolved in _roots(POOL_DENIED_EXACT):
            raise InvalidInput(f"{field} {_shown(given, resolved)} is a system directory: "
                               "give the pool a directory of its own", field=field)
        system = _deepest(resolved, _roots(WRITE_DENIED))
        if system is not None:
            raise InvalidInput(f"{field} {_shown(given, resolved)} is in {system}, a system "
                               "directory: not a place for a pool", field=field)
        # Strictly below a STORAGE_DIR/pools: where dir pools go by default (in corral's
        # data and in the default pool, which is the storage dir).
        homes = [h for h in _roots(self.pool_homes) if resolved != h and within(resolved, h)]

        def in_a_home_of(outer: Path) -> bool:
            return any(within(h, outer) for h in homes)

        for own in _roots(self.protected):
            if within(own, resolved):
                raise InvalidInput(f"{field} {_shown(given, resolved)} holds {own}, which "
                                   "corral keeps for itself", field=field)
            if within(resolved, own) and not in_a_home_of(own):
                raise InvalidInput(f"{field} {_shown(given, resolved)} is inside {own}, which "
                                   "corral keeps for itself", field=field)
        for pool in _roots(self.pools):
            if within(pool, resolved) or (within(resolved, pool) and not in_a_home_of(pool)):
                raise Conflict(f"{field} {_shown(given, resolved)} is inside or around the "
                               f"storage pool at {pool}: pools do not nest", field=field)
        return resolved
