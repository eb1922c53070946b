"""libvirt's domain lifecycle events, on a thread and a connection of their own.

libvirt delivers events through an event loop the program runs: the default one is
registered once per process (before the connection that wants events is opened) and run by
a thread here. When libvirtd goes away (restarted, killed) the connection closes; it is
opened again, so events resume with the new libvirtd.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from corral.agent_api.reports import DomainEvent
from corral.domainxml import vm_id_of
from corral.errors import CorralError

log = logging.getLogger(__name__)

_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
# The details users ask about (libvirt has more; the event names the rest).
_STOPPED = {libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
            libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
            libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
            libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
            libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed"}
_STARTED = {libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED: "booted",
            libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED: "migrated",
            libvirt.VIR_DOMAIN_EVENT_STARTED_RESTORED: "restored"}
_STATE_AFTER = {"started": "running", "resumed": "running", "suspended": "paused",
                "stopped": "stopped", "crashed": "crashed", "defined": "stopped",
                "undefined": "stopped", "shutdown": "running"}
_loop_started = threading.Lock()
_loop_running = False
RECONNECT_S = 1.0


def _run_event_loop() -> None:
    """The process's one libvirt event loop (idempotent)."""
    global _loop_running
    with _loop_started:
        if _loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_running = True


class DomainWatcher:
    """Calls ``on_event`` with every lifecycle event of the domains of ``uri``; ``on_lost``
    when the connection closes (libvirtd gone: what happened meanwhile is unknown)."""

    def __init__(self, uri: str, on_event: Callable[[DomainEvent], None],
                 on_lost: Callable[[], None]) -> None:
        self.uri, self.on_event, self.on_lost = uri, on_event, on_lost
        self._stop = threading.Event()
        self._closed = threading.Event()
        self.watching = threading.Event()  # set while events are being delivered
        self._conn: Any = None

    def start(self) -> None:
        _run_event_loop()
        threading.Thread(target=self._keep_open, name="domain-events", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._closed.set()

    def _keep_open(self) -> None:
        while not self._stop.is_set():
            try:
                self._open()
            except libvirt.libvirtError as exc:
                log.info("domain events: cannot connect to %s (%s); trying again", self.uri,
                         exc.get_error_message())
                self._stop.wait(RECONNECT_S)
                continue
            self.watching.set()
            self._closed.wait()
            self.watching.clear()
            if self._stop.is_set():
                break
            self.on_lost()
            self._stop.wait(RECONNECT_S)

    def _open(self) -> None:
        self._closed.clear()
        conn = libvirt.open(self.uri)
        conn.registerCloseCallback(lambda *_: self._closed.set(), None)
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                    self._lifecycle, None)
        self._conn = conn

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        name = _EVENTS.get(event, f"event-{event}")
        details = _STOPPED if event == libvirt.VIR_DOMAIN_EVENT_STOPPED else \
            _STARTED if event == libvirt.VIR_DOMAIN_EVENT_STARTED else {}
        try:
            vm_id = vm_id_of(dom.XMLDesc(0))
        except (libvirt.libvirtError, CorralError):
            vm_id = None  # undefined already, or not one of corral's
        try:
            self.on_event(DomainEvent(name=dom.name(), vm_id=vm_id, event=name,
                                      detail=details.get(detail, ""),
                                      state=_STATE_AFTER.get(name, "unknown")))
        except Exception:  # never let a bug kill libvirt's event loop thread
            log.exception("domain event handler failed")
