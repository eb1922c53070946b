"""Fixtures shared by every test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.images.tiny import fetch_packages
from corral.images.tiny_ssh import fetch_ssh_packages


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding the tiny guest's .debs, downloaded once in the root namespace.

    Lab hosts have no route to the package mirror, so nodes inside them get these copied
    into their build cache; later runs reuse them (``CORRAL_TINY_CACHE`` picks the dir).
    """
    base = tmp_path_factory.getbasetemp().parent
    cache = Path(os.environ.get("CORRAL_TINY_CACHE") or base / "corral-tiny-cache")
    fetch_packages(cache, lambda _pct, _msg: None)
    fetch_ssh_packages(cache, lambda _pct, _msg: None)  # dropbear, the guest's SSH server
    return cache
