"""The agent reports to the engine: a heartbeat every interval, and at once when a domain's
lifecycle changes (libvirt's events), over mutual TLS with its host certificate.

A report the engine did not take (down, cut off) is not lost: its events go with the next
one. HA rides on the reports: each carries this host's view of the quorum membership (its
quorum provider, corosync) and its lease as the guard holds it (corral.agent.guard); a
quorate view renews the lease, and so does each answer of the engine, counted from when the
report was *sent* (the answer also says how long, and whether the guard must enforce it).
The engine decides liveness from these reports alone (corral.engine.reconciler), so a
slow libvirtd must not hold a heartbeat back: what a report asks of libvirt is read on a
thread of its own and waited for at most ``LIBVIRT_WAIT_S`` (LibvirtView).
Sent with the standard library's http.client over one kept-alive connection: the idle
agent does not load httpx (corral.agent.__main__, test_agent_imports).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from corral.agent import host_memory
from corral.agent.corosync_files import CorosyncKeeper
from corral.agent.cpu_load import CpuSampler
from corral.agent.guard_link import GuardLink
from corral.agent.hypervisor import Hypervisor
from corral.agent.hypervisor.events import DomainWatcher
from corral.agent_api.domains import DomainInfo
from corral.agent_api.reports import (
    CorosyncFiles,
    DomainEvent,
    HostReport,
    LeaseState,
    Membership,
    ReportAnswer,
    domains_digest,
)
from corral.errors import CorralError
from corral.host_identity import Identity

log = logging.getLogger(__name__)

MAX_PENDING = 1000  # events kept while the engine cannot be reached; the oldest go first
COMPLAIN_EVERY_S = 30.0
LIBVIRT_WAIT_S = 0.5  # the longest a report waits for libvirt (a third of ha.detect_s's beat)


class QuorumSource(Protocol):
    def read(self) -> Membership | None: ...


@dataclass
class _Read:
    done: threading.Event = field(default_factory=threading.Event)
    domains: list[DomainInfo] = field(default_factory=list)
    cpu_times: dict[str, int] | None = None


class LibvirtView:
    """What a report says of libvirt (the domains, their CPU times), read on a thread of its
    own. A libvirtd that is slow or restarting (the lock daemon's recovery restarts it; on a
    loaded host it answered seconds late) would otherwise stall the heartbeat past
    ha.detect_s and get a healthy host fenced. A read not done within ``wait_s`` leaves the
    report with the domains last read and no CPU sample; it goes on, and a later report
    takes what it found. libvirtd down: no domains, as before."""

    def __init__(self, hv: Hypervisor, wait_s: float = LIBVIRT_WAIT_S) -> None:
        self.hv, self.wait_s = hv, wait_s
        self._last: list[DomainInfo] = []
        self._reading: _Read | None = None

    def read(self) -> tuple[list[DomainInfo], dict[str, int] | None]:
        """(the domains, their CPU times or None when unknown now)."""
        if self._reading is None:
            self._reading = _Read()
            threading.Thread(target=self._read, args=(self._reading,), name="report-libvirt",
                             daemon=True).start()
        got = self._reading
        if not got.done.wait(self.wait_s):
            return self._last, None
        self._reading, self._last = None, got.domains
        return got.domains, got.cpu_times

    def _read(self, into: _Read) -> None:
        try:
            into.domains = self.hv.list_domains()
        except CorralError as exc:  # libvirtd down: still alive; the digest says nothing
            log.debug("no domain list for the report: %s", exc)
        except Exception:  # never leave the reporter waiting on a read that died
            log.exception("listing the domains for the report failed")
        try:
            into.cpu_times = self.hv.cpu_times()
        except CorralError:
            pass
        except Exception:
            log.exception("reading the domains' CPU times for the report failed")
        finally:
            into.done.set()


class Reporter:
    def __init__(self, identity: Identity, hv: Hypervisor, interval_s: float = 1.0,
                 quorum: QuorumSource | None = None, guard: GuardLink | None = None,
                 corosync: CorosyncKeeper | None = None) -> None:
        self.identity, self.hv, self.interval_s = identity, hv, interval_s
        self.quorum, self.guard, self.corosync = quorum, guard, corosync
        self.boot_id = uuid.uuid4().hex  # a new one per start: the engine resyncs
        self._pending: list[DomainEvent] = []
        self._cpu = CpuSampler()  # the load the engine's balancer weighs hosts by
        self._libvirt = LibvirtView(hv)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watcher = DomainWatcher(hv.uri, self._on_event, on_lost=self._wake.set)
        self._thread = threading.Thread(target=self._loop, name="reporter", daemon=True)

    def start(self) -> None:
        self._watcher.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._watcher.stop()

    def _on_event(self, event: DomainEvent) -> None:
        with self._lock:
            self._pending = [*self._pending, event][-MAX_PENDING:]
        self._wake.set()  # report now, not at the next heartbeat

    def build(self, seq: int) -> tuple[HostReport, int]:
        """The report to send now, and how many pending events it carries."""
        with self._lock:
            events = list(self._pending)
        domains, times = self._libvirt.read()
        cpu_percent, vm_cpus = self._cpu.sample(times) if times is not None else (None, {})
        membership, lease = self._ha()
        return HostReport(
            boot_id=self.boot_id, seq=seq, interval_s=self.interval_s,
            digest=domains_digest((d.vm_id, d.state) for d in domains if d.vm_id),
            domains=len(domains), load_1m=os.getloadavg()[0],
            memory_available_mib=host_memory.available_mib(), events=events,
            cpu_percent=cpu_percent, memory_used_percent=host_memory.used_percent(),
            vm_cpus=vm_cpus, membership=membership, lease=lease,
        ), len(events)

    def _ha(self) -> tuple[Membership | None, LeaseState | None]:
        """The quorum view (a quorate one renews the lease: a view always holds its own
        node) and the lease as the guard holds it after that."""
        membership = self.quorum.read() if self.quorum is not None else None
        if self.guard is None:
            return membership, None
        if membership is not None and membership.quorate:
            return membership, self.guard.renew(time.monotonic(), by="quorum")
        return membership, self.guard.state()

    def _answered(self, conn: http.client.HTTPSConnection | None, sent_at: float,
                  answer: bytes) -> None:
        """The engine answered the report sent at ``sent_at``: the lease holds from then;
        and this host's corosync files follow the engine's when they differ."""
        try:
            got = ReportAnswer.model_validate_json(answer)
        except ValueError:
            return
        if self.guard is not None:
            self.guard.renew(sent_at, by="engine", lease_s=got.lease_s, armed=got.arm_lease)
        if conn is not None and self.corosync is not None and \
                self.corosync.wants(got.corosync_digest):
            try:
                conn.request("GET", "/api/v1/agent/corosync")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}: {body[:300]!r}")
                self.corosync.write(CorosyncFiles.model_validate_json(body))
            except (OSError, ValueError, http.client.HTTPException,
                    subprocess.SubprocessError) as exc:  # tried again at the next answer
                conn.close()
                log.warning("corosync files from the engine: %s", exc)

    def _post(self, conn: http.client.HTTPSConnection, body: bytes) -> bytes:
        conn.request("POST", "/api/v1/agent/report", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = resp.read()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}: {answer[:300]!r}")
        return answer

    def _loop(self) -> None:
        url = urlsplit(self.identity.engine_url)
        # A stuck request must not stall heartbeats for long.
        conn = http.client.HTTPSConnection(url.hostname or "", url.port or 443,
                                           timeout=max(2.0, 2 * self.interval_s),
                                           context=self.identity.engine_context())
        seq, complained = 0, float("-inf")
        try:
            while not self._stop.is_set():
                self._wake.clear()
                report, sent = self.build(seq)
                sent_at = time.monotonic()
                try:
                    answer = self._post(conn,
                                        json.dumps(report.model_dump(mode="json")).encode())
                    with self._lock:
                        self._pending = self._pending[sent:]
                    self._answered(conn, sent_at, answer)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # the next request opens a new connection
                    if time.monotonic() - complained >= COMPLAIN_EVERY_S:
                        complained = time.monotonic()
                        log.warning("report to the engine at %s failed: %s",
                                    self.identity.engine_url, exc)
                seq += 1
                self._wake.wait(self.interval_s)
        finally:
            conn.close()
