"""0014_users on a database from before users: the node's token keeps working, becomes
the `admin` user's at the next start, and token names become unique per user. On SQLite
and PostgreSQL (tests/unit/pg_server.py): the unique constraint it drops is named by each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from pg_server import PgServer, running_postgres

from corral.engine.app import build_context
from corral.engine.context import EngineSettings
from corral.engine.db.session import MIGRATIONS
from corral.engine.services import auth, users
from corral.httpserve import hash_token


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'corral.db'}"
        return
    with request.getfixturevalue("postgres").database() as url:
        yield url


def test_an_old_nodes_token_survives_the_upgrade(tmp_path: Path, db_url: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db_url)
    command.upgrade(cfg, "0013_scheduler")
    eng = sa.create_engine(db_url)
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO tokens (id, name, secret_hash, role, created_at) VALUES "
                          "('t1', 'admin', :h, 'admin', '2026-01-01 00:00:00')"),
                  {"h": hash_token("crl_old")})
    eng.dispose()

    ctx = build_context(EngineSettings(data_dir=tmp_path, db_url=db_url,  # to head
                                       agent_reconnect_s=0))
    try:
        assert auth.authenticate(ctx, "crl_old").role == "admin"  # as before, no user
        assert users.ensure_admin(ctx, "admin password") is None  # given, not made here
        who = auth.authenticate(ctx, "crl_old")
        assert (who.user, who.role, who.kind) == ("admin", "admin", "api")
        users.create(ctx, "alice", "user", None)
        auth.create_token(ctx, "admin", "user", user="alice")  # a name another user has
        assert {t.name for t in auth.list_tokens(ctx, "alice")} == {"admin"}
    finally:
        ctx.ops.shutdown(wait=True)
        ctx.db.engine.dispose()
