"""Fixtures of the unit tests: ``ctx``, a fresh engine (one up host, the tiny image, the
network ``default``: engine_seed.py), and ``admin``, its admin client. A file that needs
another engine (a stand-in agent, other seeds) defines its own ``ctx``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_seed import admin_client, engine_context
from starlette.testclient import TestClient

from corral.engine.context import EngineContext


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path)


@pytest.fixture
def admin(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)
