"""Guest-only Debian packages for the tiny guest (its SSH server, its guest agent): fetched
with ``apt-get download`` into the tiny image's cache, never installed on the host."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from corral.errors import HostError, Unavailable

Progress = Callable[[int, str], None]


def deb_globs(packages: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"{p}_*.deb" for p in packages)


def cached_debs(cache_dir: Path, packages: Sequence[str]) -> list[Path] | None:
    """The newest .deb of each of ``packages`` in the cache, if all are there."""
    debs = cache_dir / "debs"
    found = []
    for pattern in deb_globs(packages):
        matches = sorted(debs.glob(pattern), key=lambda p: (p.stat().st_mtime, p.name))
        if not matches:
            return None
        found.append(matches[-1])
    return found


def fetch_debs(cache_dir: Path, packages: Sequence[str], progress: Progress,
               pct: int) -> list[Path]:
    """The .debs of ``packages``: from the cache, else ``apt-get download`` (with one
    ``apt-get update`` when the package lists are stale)."""
    from corral.images.tiny import _apt_options, _apt_update, _run, _tool

    cached = cached_debs(cache_dir, packages)
    if cached is not None:
        return cached
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    what = f"apt-get download {' '.join(packages)} (no network or apt mirror reachable?)"
    for attempt in (1, 2):
        download = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
        try:
            progress(pct, f"downloading {', '.join(packages)}")
            _run([_tool("apt-get"), *_apt_options(), "download", *packages], what,
                 cwd=download, unavailable=True)
            for deb in download.glob("*.deb"):
                os.replace(deb, debs / deb.name)
        except Unavailable:
            if attempt == 2 or os.geteuid() != 0:
                raise
            _apt_update(progress, pct, "download failed; the package lists may be stale")
            continue
        finally:
            shutil.rmtree(download, ignore_errors=True)
        break
    found = cached_debs(cache_dir, packages)
    if found is None:
        raise HostError(f"apt-get download did not produce all of {', '.join(packages)}")
    return found
