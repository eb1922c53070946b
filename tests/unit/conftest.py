"""Fixtures of the unit tests: ``ctx``, a fresh engine (one up host, the tiny image, the
network ``default``: engine_seed.py), and ``admin``, its admin client. A file that needs
another engine (a stand-in agent, other seeds) defines its own ``ctx``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_seed import admin_client, engine_context
from starlette.testclient import TestClient

from corral.engine import app as engine_app
from corral.engine.context import EngineContext
from corral.engine.db import session as db_session


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path)


@pytest.fixture
def admin(ctx: EngineContext) -> TestClient:
    return admin_client(ctx)


@pytest.fixture(scope="session", autouse=True)
def _schema_migrated_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every engine of the unit tests starts from a copy of one SQLite database that Alembic
    migrated to the head once (a fresh migration costs about 0.3 s, a copy 0.01 s: minutes
    over the suite). Alembic still runs on the copy and finds it at the head; a database
    that exists already, or is not SQLite, is migrated as it is."""
    template = tmp_path_factory.mktemp("schema") / "corral.db"
    real = db_session.migrate
    real(f"sqlite:///{template}")

    def migrate(url: str) -> None:
        path = Path(url.removeprefix("sqlite:///"))
        if url.startswith("sqlite:///") and not path.exists():
            shutil.copyfile(template, path)
        real(url)

    patch = pytest.MonkeyPatch()
    for module in (db_session, engine_app):
        patch.setattr(module, "migrate", migrate)
    yield
    patch.undo()
