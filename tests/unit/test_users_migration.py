"""0014_users on a database from before users: the node's token keeps working, becomes
the `admin` user's at the next start, and token names become unique per user."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from corral.engine.app import build_context
from corral.engine.context import EngineSettings
from corral.engine.db.session import MIGRATIONS
from corral.engine.services import auth, users
from corral.httpserve import hash_token


def test_an_old_nodes_token_survives_the_upgrade(tmp_path: Path) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path / 'corral.db'}")
    command.upgrade(cfg, "0013_scheduler")
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'corral.db'}")
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO tokens (id, name, secret_hash, role, created_at) VALUES "
                          "('t1', 'admin', :h, 'admin', '2026-01-01 00:00:00')"),
                  {"h": hash_token("crl_old")})
    eng.dispose()

    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))  # to head
    try:
        assert auth.authenticate(ctx, "crl_old").role == "admin"  # as before, no user
        assert users.ensure_admin(ctx, "admin password") is None  # given, not made here
        who = auth.authenticate(ctx, "crl_old")
        assert (who.user, who.role, who.kind) == ("admin", "admin", "api")
        users.create(ctx, "alice", "user", None)
        auth.create_token(ctx, "admin", "user", user="alice")  # a name another user has
        assert {t.name for t in auth.list_tokens(ctx, "alice")} == {"admin"}
    finally:
        ctx.ops.shutdown()
