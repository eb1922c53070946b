"""libvirt's lifecycle events reach the agent's reporter: the watcher on the test driver's
shared node (``test:///default`` is one node per process, so a second connection's domains
are seen)."""

from __future__ import annotations

import queue
import uuid

import libvirt

from corral.agent.hypervisor.events import DomainWatcher
from corral.agent_api.reports import DomainEvent

XML = """<domain type='test'><name>{name}</name><memory>65536</memory>
<os><type>hvm</type></os></domain>"""


def _next(events: queue.Queue[DomainEvent], name: str, kind: str) -> DomainEvent:
    for _ in range(20):  # bounded: the test driver sends a few events per action
        ev = events.get(timeout=10)
        if ev.name == name and ev.event == kind:
            return ev
    raise AssertionError(f"no {kind} event for {name}")


def test_start_and_destroy_arrive_as_events_with_the_state_after() -> None:
    events: queue.Queue[DomainEvent] = queue.Queue()
    lost: list[bool] = []
    watcher = DomainWatcher("test:///default", events.put, on_lost=lambda: lost.append(True))
    watcher.start()
    name = f"ev-{uuid.uuid4().hex[:6]}"
    conn = libvirt.open("test:///default")
    try:
        assert watcher.watching.wait(10)  # its connection opens on its own thread
        dom = conn.defineXML(XML.format(name=name))
        assert _next(events, name, "defined").state == "stopped"
        dom.create()
        assert _next(events, name, "started") == DomainEvent(
            name=name, event="started", detail="booted", state="running")
        dom.destroy()
        assert _next(events, name, "stopped").detail == "destroyed"
        dom.undefine()
    finally:
        watcher.stop()
        conn.close()
    assert lost == []
