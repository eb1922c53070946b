"""The fencing service HA calls (corral.engine.services.fencing.fence_off): methods tried in
order, a host counted off only when a device's `status` says off, every reason kept when
none can, an event for each run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_seed import engine_context
from fence_scripts import install

from corral.api.fencing import FenceMethodSet
from corral.engine.context import EngineContext
from corral.engine.db.models import FenceMethod, Host
from corral.engine.services import fence_config, fencing


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineContext]:
    install(tmp_path / "agents", monkeypatch)
    monkeypatch.setattr(fencing, "AGENT_TIMEOUT_S", 1.0)  # the hanging agent's bound
    yield from engine_context(tmp_path)


def _h1(ctx: EngineContext) -> str:
    with ctx.db.session() as s:
        return s.query(Host).filter_by(name="h1").one().id


def _add(ctx: EngineContext, agent: str, **options: str) -> None:
    fence_config.set_method(ctx, "h1", FenceMethodSet(agent=agent, options=options))


def test_no_method_is_not_configured_and_never_confirmed(ctx: EngineContext) -> None:
    assert not fencing.configured(ctx, _h1(ctx))
    outcome = fencing.fence_off(ctx, _h1(ctx))
    assert not outcome.confirmed and "no fence method" in outcome.detail


def test_off_confirmed_by_status(ctx: EngineContext, tmp_path: Path) -> None:
    power = tmp_path / "power"
    power.write_text("on\n")
    _add(ctx, "fence_test_file", state=str(power))
    assert fencing.configured(ctx, _h1(ctx))
    outcome = fencing.fence_off(ctx, _h1(ctx))
    assert outcome.confirmed and outcome.method == "#1 fence_test_file"
    assert power.read_text().strip() == "off"
    event = ctx.bus.recent[-1]
    assert event.type == "host" and event.data["fence"] == "confirmed"
    assert event.data["name"] == "h1"


@pytest.mark.skipif(shutil.which("fence_dummy", path="/usr/sbin") is None,
                    reason="Debian's fence-agents not installed")
def test_debian_fence_dummy_fences_and_powers_on(ctx: EngineContext, tmp_path: Path) -> None:
    _add(ctx, "fence_dummy", status_file=str(tmp_path / "dummy"))
    assert fencing.fence_off(ctx, _h1(ctx)).confirmed
    assert fencing.power_on(ctx, _h1(ctx)).confirmed
    assert [c.power for c in fencing.test(ctx, "h1").checks] == ["on"]


def test_a_failing_method_hands_over_to_the_next(ctx: EngineContext, tmp_path: Path) -> None:
    power = tmp_path / "power"
    _add(ctx, "fence_test_fail")
    _add(ctx, "fence_test_hang")
    _add(ctx, "fence_test_file", state=str(power))
    outcome = fencing.fence_off(ctx, _h1(ctx))
    assert outcome.confirmed and outcome.method == "#3 fence_test_file"


def test_none_confirming_gives_every_reason_and_is_not_confirmed(ctx: EngineContext) -> None:
    _add(ctx, "fence_test_fail")
    _add(ctx, "fence_test_hang")
    _add(ctx, "fence_test_liar")
    outcome = fencing.fence_off(ctx, _h1(ctx))
    assert not outcome.confirmed and outcome.method == ""
    assert "#1 fence_test_fail: off: exit 1: Failed: unable to connect to BMC" in outcome.detail
    assert "#2 fence_test_hang: off: no answer in time" in outcome.detail
    # an off that said done, while status says on: not taken on its word
    assert "#3 fence_test_liar: off answered done but status says on" in outcome.detail
    assert ctx.bus.recent[-1].data["fence"] == "failed"


def test_an_agent_uninstalled_since_is_a_failed_method(ctx: EngineContext,
                                                       tmp_path: Path) -> None:
    _add(ctx, "fence_test_liar")
    (tmp_path / "agents" / "fence_test_liar").unlink()
    outcome = fencing.fence_off(ctx, _h1(ctx))
    assert not outcome.confirmed and "not found" in outcome.detail


def test_the_test_asks_status_of_every_method(ctx: EngineContext, tmp_path: Path) -> None:
    power = tmp_path / "power"
    power.write_text("off\n")
    _add(ctx, "fence_test_file", state=str(power))
    _add(ctx, "fence_test_fail")
    checks = fencing.test(ctx, "h1").checks
    assert [(c.position, c.power, c.ok) for c in checks] == [(1, "off", True),
                                                              (2, None, False)]
    assert checks[0].detail == "Status: OFF"
    assert "unable to connect" in checks[1].detail
    assert power.read_text().strip() == "off"  # nothing powered


def test_a_removed_host_takes_its_methods_with_it(ctx: EngineContext) -> None:
    _add(ctx, "fence_test_liar", password="pw")
    with ctx.db.session() as s:
        s.delete(s.query(Host).filter_by(name="h1").one())
    with ctx.db.session() as s:
        assert s.query(FenceMethod).count() == 0
