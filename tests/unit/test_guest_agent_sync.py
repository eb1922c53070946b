"""Setting a guest's clock after a revert (corral.agent.hypervisor.guest_agent.sync_time): a
guest just restored from a memory snapshot may miss the first pings of its agent, so a revert
waits (bounded) for an agent that answered before it; a resume, or a guest without an agent,
does not wait."""

from __future__ import annotations

from typing import Any

import pytest

from corral.agent.hypervisor import guest_agent


class Dom:
    def __init__(self) -> None:
        self.set: list[Any] = []

    def setTime(self, time: dict[str, int], flags: int) -> None:  # libvirt's name
        self.set.append((time, flags))


def _answers_after(monkeypatch: pytest.MonkeyPatch, misses: int) -> list[int]:
    pings = [0]

    def answers(_dom: Any) -> bool:
        pings[0] += 1
        return pings[0] > misses

    monkeypatch.setattr(guest_agent, "answers", answers)
    monkeypatch.setattr(guest_agent.time, "sleep", lambda _s: None)
    return pings


def test_a_revert_waits_for_the_agent_to_answer_again(monkeypatch: pytest.MonkeyPatch) -> None:
    pings = _answers_after(monkeypatch, misses=3)
    dom = Dom()
    assert guest_agent.sync_time(dom, wait_s=30.0) is True
    assert pings[0] == 4 and len(dom.set) == 1


def test_without_waiting_a_silent_agent_is_skipped_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pings = _answers_after(monkeypatch, misses=3)
    dom = Dom()
    assert guest_agent.sync_time(dom) is False
    assert pings[0] == 1 and dom.set == []
