"""`corral up` on first start: the user `admin` with the password of --admin-password-file
(or a random one, logged once), and client.json's token belonging to it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.services import auth, users
from corral.errors import InvalidInput
from corral.node import up
from corral.node.paths import NodePaths


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    ctx = build_context(EngineSettings(data_dir=tmp_path / "data", agent_reconnect_s=0))
    yield ctx
    ctx.ops.shutdown()


def test_the_admin_gets_the_password_of_the_file(ctx: EngineContext, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret admin pw\n")
    paths = NodePaths(tmp_path / "data")
    opts = up.UpOptions(data_dir=paths.data_dir, admin_password_file=pw)
    with caplog.at_level(logging.INFO):
        up._client_config(ctx, paths, opts, tmp_path / "ca.pem")
    assert "s3cret" not in caplog.text  # the operator's own: never logged
    token = json.loads(paths.client_config.read_text())["token"]
    assert auth.authenticate(ctx, token).user == "admin"
    assert users.check_password(ctx, "admin", "s3cret admin pw")
    assert "--admin-password-file" in opts.setting_args()  # a detached start passes it on


def test_without_a_file_a_random_password_is_logged_once(
        ctx: EngineContext, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = NodePaths(tmp_path / "data")
    paths.log.write_text("")
    opts = up.UpOptions(data_dir=paths.data_dir)
    with caplog.at_level(logging.INFO):
        up._client_config(ctx, paths, opts, tmp_path / "ca.pem")
    line = next(r.getMessage() for r in caplog.records if "made with password" in r.getMessage())
    password = line.split("made with password ")[1].split(" ")[0]
    assert users.check_password(ctx, "admin", password)
    assert paths.log.stat().st_mode & 0o077 == 0  # the log holds it now: private
    first = json.loads(paths.client_config.read_text())["token"]
    caplog.clear()
    up._client_config(ctx, paths, opts, tmp_path / "ca.pem")  # a restart
    assert "made with password" not in caplog.text
    assert json.loads(paths.client_config.read_text())["token"] == first


def test_a_short_or_missing_password_file_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(InvalidInput) as exc:
        up.read_password_file(short)
    assert exc.value.field == "admin_password_file"
    with pytest.raises(InvalidInput):
        up.read_password_file(tmp_path / "none")
