"""The agent's reports carry HA's part (corral.agent.reporter): the host's quorum view and
its lease; a quorate view renews the lease, and so does the engine's answer, from the time
the report was sent, with the lease's length and arming the engine gave."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.agent.reporter import Reporter
from corral.agent_api.reports import LeaseState, Membership, ReportAnswer
from corral.errors import HostError


class Hv:
    uri = "test:///default"

    def list_domains(self) -> list[Any]:
        return []

    def cpu_times(self) -> Any:
        raise HostError("no libvirt here")


@dataclass
class Guard:
    renewals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lease: LeaseState = field(default_factory=lambda: LeaseState(armed=True, left_s=7.5))

    def renew(self, at: float, **kw: Any) -> LeaseState:
        self.renewals.append((at, kw))
        return self.lease

    def state(self) -> LeaseState:
        return self.lease


@dataclass
class Quorum:
    view: Membership | None

    def read(self) -> Membership | None:
        return self.view


def reporter(view: Membership | None, guard: Guard | None) -> Reporter:
    return Reporter(Any, Hv(), quorum=Quorum(view), guard=guard)  # type: ignore[arg-type]


def test_a_quorate_view_renews_the_lease_and_both_go_in_the_report() -> None:
    guard = Guard()
    view = Membership(quorate=True, members=["h1", "h2", "h3"], ring_id="1.2c")
    report, _ = reporter(view, guard).build(0)
    assert report.membership == view
    assert report.lease == LeaseState(armed=True, left_s=7.5)
    assert [kw for _, kw in guard.renewals] == [{"by": "quorum"}]


def test_a_view_without_quorum_renews_nothing() -> None:
    guard = Guard()
    report, _ = reporter(Membership(quorate=False, members=["h3"]), guard).build(0)
    assert guard.renewals == []
    assert report.membership is not None and not report.membership.quorate
    assert report.lease is not None  # still said: the engine shows it


def test_the_engines_answer_renews_from_the_send_time_with_its_terms() -> None:
    guard = Guard()
    answer = ReportAnswer(host="h1", status="up", lease_s=12.0, arm_lease=True)
    reporter(None, guard)._answered(None, 123.5, answer.model_dump_json().encode())
    assert guard.renewals == [(123.5, {"by": "engine", "lease_s": 12.0, "armed": True})]


def test_no_guard_and_no_quorum_provider_report_neither() -> None:
    report, _ = reporter(None, None).build(0)
    assert report.membership is None and report.lease is None
