"""A report's heartbeat never waits long on libvirt (corral.agent.reporter.LibvirtView): a
libvirtd that hangs (restarting after its lock daemon died, or a loaded host) leaves the
report with the domains last read, so the engine still hears the host (a host silent for
ha.detect_s is fenced); the read goes on and a later report carries it."""

from __future__ import annotations

import threading
from typing import Any

from corral.agent.reporter import LibvirtView, Reporter
from corral.agent_api.domains import DomainInfo
from corral.agent_api.reports import domains_digest
from corral.errors import Unavailable

BOUND_S = 30.0  # what the test waits at most for a thread (never met when things work)


def domain(name: str, state: str = "running") -> DomainInfo:
    return DomainInfo(name=name, uuid=f"uuid-{name}", vm_id=f"id-{name}", state=state)


class Hv:
    """libvirt as a test drives it: answers with ``domains``, or blocks while ``hold`` is
    clear, or is down."""

    uri = "test:///default"

    def __init__(self) -> None:
        self.domains = [domain("web")]
        self.hold = threading.Event()
        self.hold.set()
        self.down = False
        self.calls = 0

    def list_domains(self) -> list[DomainInfo]:
        self.calls += 1
        if not self.hold.wait(BOUND_S):
            raise AssertionError("the test never released libvirt")
        if self.down:
            raise Unavailable("cannot connect to libvirt (is libvirtd running?)")
        return list(self.domains)

    def cpu_times(self) -> dict[str, int]:
        if self.down:
            raise Unavailable("cannot connect to libvirt")
        return {d.vm_id or "": 10**9 for d in self.domains}


def in_thread(fn: Any) -> Any:
    """``fn()``'s result, from a thread, failing the test if it does not return."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(BOUND_S)
    assert out, "blocked on libvirt"
    return out[0]


def test_a_hung_libvirt_leaves_the_report_with_the_last_domains_then_the_new_ones() -> None:
    hv = Hv()
    view = LibvirtView(hv, wait_s=0.05)  # type: ignore[arg-type]
    assert view.read() == ([domain("web")], {"id-web": 10**9})
    hv.hold.clear()  # libvirtd hangs
    hv.domains = [domain("web"), domain("db")]
    assert in_thread(view.read) == ([domain("web")], None)  # the last list, no CPU sample
    assert in_thread(view.read) == ([domain("web")], None)  # and again: one read in flight
    assert hv.calls == 2
    hv.hold.set()  # it answers: the read that waited lands in the next report
    got = in_thread(lambda: until_fresh(view))
    assert got == ([domain("web"), domain("db")], {"id-web": 10**9, "id-db": 10**9})
    assert hv.calls == 2


def until_fresh(view: LibvirtView) -> tuple[list[DomainInfo], dict[str, int] | None]:
    """The first read with a CPU sample (a read libvirt finished)."""
    for _ in range(int(BOUND_S / view.wait_s)):
        domains, times = view.read()
        if times is not None:
            return domains, times
    raise AssertionError("the read never landed")


def test_a_report_is_built_while_libvirt_hangs() -> None:
    hv = Hv()
    reporter = Reporter(Any, hv)  # type: ignore[arg-type]
    hv.hold.clear()
    try:
        report, _ = in_thread(lambda: reporter.build(0))  # the heartbeat goes out anyway
        assert report.domains == 0 and report.cpu_percent is None  # nothing read yet
    finally:
        hv.hold.set()


def test_libvirtd_down_reports_no_domains_and_the_host_still_alive() -> None:
    hv = Hv()
    hv.down = True
    reporter = Reporter(Any, hv)  # type: ignore[arg-type]
    report, _ = in_thread(lambda: reporter.build(0))
    assert report.domains == 0 and report.digest == domains_digest([])
    assert report.cpu_percent is None


def test_the_report_carries_the_domains_libvirt_lists() -> None:
    hv = Hv()
    reporter = Reporter(Any, hv)  # type: ignore[arg-type]
    report, _ = in_thread(lambda: reporter.build(0))
    assert report.domains == 1 and report.digest == domains_digest([("id-web", "running")])
