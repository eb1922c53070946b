"""Fixtures of the unit tests: ``ctx``, a fresh engine (one up host, the tiny image, the
network ``default``: engine_seed.py), and ``admin``, its admin client. A file that needs
another engine (a stand-in agent, other seeds) defines its own ``ctx``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from engine_seed import admin_client, engine_context
from starlette.testclient import TestClient

from corral.engine import app as engine_app
from corral.engine.context import EngineContext
from corral.engine.db import session as db_session
from corral.engine.services import passwords

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 set, a plain run with neither;
# rich would fix the CLI's console (corral.cli.output, imported by the test modules) at
# 80x24, ignoring the COLUMNS the CLI tests give CliRunner. Make a worker a plain run.
if "PYTEST_XDIST_WORKER" in os.environ:
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


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


@pytest.fixture(scope="session", autouse=True)
def real_password_hasher() -> Iterator[tuple[PasswordHasher, str]]:
    """Passwords are hashed with argon2id at its lowest cost (1 pass over 1 MiB instead of
    3 over 64 MiB, about 0.1 s a hash or a login here): the tests check who may log in, not
    how costly a guess is. test_password_hashes.py checks the engine's own hasher and its
    unknown user's stand-in hash, which this fixture yields."""
    real = passwords._HASHER, passwords._DUMMY
    quick = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    patch = pytest.MonkeyPatch()
    patch.setattr(passwords, "_HASHER", quick)
    patch.setattr(passwords, "_DUMMY", quick.hash("corral: no such user"))
    yield real
    patch.undo()
