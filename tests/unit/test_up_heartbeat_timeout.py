"""`corral up --heartbeat-timeout`: it reaches the engine's settings, in the foreground and
through `--detach` (which starts `corral up` again with the settings as options), and a
value out of range is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import app
from corral.engine.context import EngineSettings
from corral.node import up as node_up


def _captured_up(monkeypatch: pytest.MonkeyPatch) -> list[node_up.UpOptions]:
    seen: list[node_up.UpOptions] = []
    monkeypatch.setattr(node_up, "run_up", seen.append)
    return seen


def test_the_option_reaches_the_engines_settings(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _captured_up(monkeypatch)
    result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path),
                                      "--heartbeat-timeout", "2.5"])
    assert result.exit_code == 0, result.output
    assert seen[0].heartbeat_timeout_s == 2.5


def test_the_default_is_the_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _captured_up(monkeypatch)
    result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen[0].heartbeat_timeout_s == EngineSettings(tmp_path).heartbeat_timeout_s


def test_detach_passes_it_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--detach` re-runs `corral up` with setting_args(): parsed back, the value is the same."""
    opts = node_up.UpOptions(data_dir=tmp_path, heartbeat_timeout_s=7.5)
    seen = _captured_up(monkeypatch)
    result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path),
                                      *opts.setting_args()])
    assert result.exit_code == 0, result.output
    assert seen[0].heartbeat_timeout_s == 7.5


@pytest.mark.parametrize("value", ["0.1", "601", "soon"])
def test_out_of_range_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 value: str) -> None:
    seen = _captured_up(monkeypatch)
    result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path),
                                      "--heartbeat-timeout", value])
    assert result.exit_code == 2
    assert "--heartbeat-timeout" in result.output
    assert seen == []
