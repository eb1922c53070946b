"""Live migration of a domain to another host's libvirtd, peer to peer: this host's libvirtd
connects to the destination URI itself and QEMU streams the guest's memory to the target's
QEMU, while the calling thread watches libvirt's job statistics.

``migrateToURI3`` blocks until the guest runs on the target (or the migration failed), so it
runs in a thread of its own; the job's thread reads ``jobStats`` every ``POLL_S`` and
reports memory remaining, transfer and dirty rates and the iteration. A cancel (the job's
reporter raises) calls ``abortJob``: QEMU stops streaming, the guest keeps running here and
the target's incoming domain is discarded by libvirt (nothing is defined there before the
end: ``PERSIST_DEST`` defines it only once the guest runs there). The downtime is libvirt's
own measure, read from the completed job on the destination (the source no longer has the
domain once ``UNDEFINE_SOURCE`` removed it).

Encryption (corral.agent.migration_pki): libvirtd reaches the target's libvirtd over
``qemu+tls`` with this host's certificate (``pkipath``), and with ``tls`` QEMU's own stream
is TLS too (``VIR_MIGRATE_TLS``), the target's certificate checked against its host name
(``tls.destination``) while the stream goes to its address on the migration network
(``migrate_uri``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import libvirt

from corral.agent.hypervisor.libvirt_host import Hypervisor, _mapped
from corral.agent.migration_pki import ready
from corral.agent_api.migration import MigrateBody, Migrated
from corral.errors import Conflict, HypervisorError, Unavailable, WrongState

POLL_S = 0.5
ABORT_WAIT_S = 60.0  # how long an aborted migration may take to give the guest back
MIB = 1 << 20

Report = Callable[[int, str], None]  # corral.agent.jobs.JobReporter: raises when cancelled


def flags_of(body: MigrateBody) -> int:
    flags: int = libvirt.VIR_MIGRATE_PEER2PEER
    if body.live:
        flags |= libvirt.VIR_MIGRATE_LIVE
    if body.persist:
        flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    if body.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if body.postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    if body.copy_storage:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    if body.shared_storage:  # see MigrateBody.shared_storage
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if body.tls:
        flags |= libvirt.VIR_MIGRATE_TLS
    return flags


def params_of(body: MigrateBody) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if body.dest_xml:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = body.dest_xml
    if body.persist_xml:
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = body.persist_xml
    if body.bandwidth_mib_s:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = body.bandwidth_mib_s
    if body.copy_storage and body.copy_disks:  # else libvirt copies every writable disk
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(body.copy_disks)
    if body.migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = body.migrate_uri
    if body.tls and body.tls_hostname:
        params[libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION] = body.tls_hostname
    return params


def destination_of(body: MigrateBody, pki: Path | None) -> str:
    """The URI this host's libvirtd opens to the target: a ``qemu+tls`` one with this host's
    certificates (``pkipath``), unless it names its own."""
    uri = body.destination
    if not uri.startswith("qemu+tls://") or "pkipath=" in uri:
        return uri
    if pki is None or not ready(pki):
        raise Unavailable(f"this host has no certificates for migration TLS ({pki}): the "
                          "agent writes them from its identity when it starts")
    return f"{uri}{'&' if '?' in uri else '?'}pkipath={quote(str(pki), safe='/')}"


def unconverged(name: str, seconds: int, stats: dict[str, Any]) -> str:
    """Why a migration still in pre-copy after ``seconds`` is given up, from its job stats."""
    left = int(stats.get("memory_remaining") or 0) // MIB
    sent = int(stats.get("memory_bps") or 0) / MIB
    dirty = int(stats.get("memory_dirty_rate") or 0) * int(stats.get("memory_page_size")
                                                            or 4096) / MIB
    why = (f"dirty rate {dirty:.1f} MiB/s above transfer rate {sent:.1f} MiB/s"
           if dirty > 0 and dirty >= sent else
           f"{left} MiB left at a transfer rate of {sent:.1f} MiB/s, dirty rate "
           f"{dirty:.1f} MiB/s")
    return (f"the migration of {name} did not converge in {seconds} s: {why}; aborted, the "
            "VM keeps running here (allow post-copy, raise the bandwidth or the downtime "
            "limit, or migration.converge_s)")


def progress_of(stats: dict[str, Any]) -> tuple[int, str]:
    """(percent, message) of a running migration's job statistics."""
    total = int(stats.get("memory_total") or 0)
    left = int(stats.get("memory_remaining") or 0)
    disk_total = int(stats.get("disk_total") or 0)
    disk_left = int(stats.get("disk_remaining") or 0)
    if total <= 0 and disk_total <= 0:
        return 0, "starting"
    # Disks (a storage copy) go first, then memory: the percent counts both.
    percent = max(0, min(99, 100 * (total + disk_total - left - disk_left)
                         // (total + disk_total)))
    parts = [f"{left // MIB} MiB of {total // MIB} MiB left"]
    if disk_total:
        parts.insert(0, f"disks {disk_left // MIB} MiB of {disk_total // MIB} MiB left")
    if stats.get("memory_bps"):
        parts.append(f"{int(stats['memory_bps']) // MIB} MiB/s")
    if stats.get("memory_dirty_rate"):  # pages per second
        page = int(stats.get("memory_page_size") or 4096)
        parts.append(f"dirtying {int(stats['memory_dirty_rate']) * page // MIB} MiB/s")
    iteration = stats.get("memory_iteration")
    head = f"iteration {iteration}: " if iteration else ""
    return percent, head + ", ".join(parts)


class _Call:
    """``migrateToURI3`` in a thread: its error, if any, once it ended."""

    def __init__(self, dom: Any, uri: str, params: dict[str, Any], flags: int) -> None:
        self.error: libvirt.libvirtError | None = None
        self._thread = threading.Thread(target=self._run, args=(dom, uri, params, flags),
                                        name="migrate", daemon=True)
        self._thread.start()

    def _run(self, dom: Any, uri: str, params: dict[str, Any], flags: int) -> None:
        try:
            dom.migrateToURI3(uri, params, flags)
        except libvirt.libvirtError as exc:
            self.error = exc

    def wait(self, seconds: float) -> bool:
        """True once the call ended."""
        self._thread.join(seconds)
        return not self._thread.is_alive()


def migrate(hv: Hypervisor, name: str, body: MigrateBody, report: Report,
            pki: Path | None = None) -> Migrated:
    """Move the running domain ``name`` to ``body.destination``; raises (the guest still
    running here) when it fails, is cancelled or does not converge. ``pki``: this host's
    certificates for a ``qemu+tls`` destination (corral.agent.migration_pki)."""
    uri = destination_of(body, pki)
    conn = hv._open()  # a connection of its own: the agent's other calls do not queue behind
    try:
        with _mapped(f"domain {name}"):
            dom = conn.lookupByName(name)
            if not dom.isActive():
                raise WrongState(f"domain {name} is not running: a live migration moves a "
                                 "running guest")
        return _watch(dom, name, body, uri, report)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _watch(dom: Any, name: str, body: MigrateBody, uri: str, report: Report) -> Migrated:
    started = time.monotonic()
    call = _Call(dom, uri, params_of(body), flags_of(body))
    tuned = body.max_downtime_ms is None
    switched = False
    why_aborted: str | None = None
    try:
        while not call.wait(POLL_S):
            stats = _stats(dom)
            if not tuned and stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != \
                    libvirt.VIR_DOMAIN_JOB_NONE:
                # Takes effect on the running migration (QEMU's downtime-limit parameter).
                with contextlib.suppress(libvirt.libvirtError):
                    dom.migrateSetMaxDowntime(body.max_downtime_ms, 0)
                    tuned = True
            percent, message = progress_of(stats)
            report(percent, ("post-copy " if switched else "") + message)
            if why_aborted is None and not switched and \
                    time.monotonic() - started > body.converge_timeout_s:
                if body.postcopy:
                    with _mapped(f"post-copy of {name}"):
                        dom.migrateStartPostCopy(0)
                    switched = True
                else:
                    why_aborted = unconverged(name, body.converge_timeout_s, stats)
                    _abort(dom)
    except BaseException:  # cancelled (JobCancelled) or broken: the guest stays here
        _abort(dom)
        call.wait(ABORT_WAIT_S)
        raise
    if why_aborted is not None:
        raise Conflict(why_aborted)
    if call.error is not None:
        raise HypervisorError(f"migration of {name} to {body.destination} failed: "
                              f"{_explained(call.error.get_error_message())}")
    total_ms = int((time.monotonic() - started) * 1000)
    done = _completed(uri, name)
    return Migrated(destination=body.destination, total_ms=total_ms,
                    downtime_ms=_int(done.get("downtime")),
                    memory_bytes=_int(done.get("memory_processed")),
                    iterations=_int(done.get("memory_iteration")), postcopy=switched,
                    tls=body.tls)


# What libvirt says when the peer's libvirtd went away mid-migration (killed, host lost).
_PEER_LOST = ("client socket is closed", "End of file while reading data",
              "Cannot recv data", "Connection reset by peer")


def _explained(message: str) -> str:
    """libvirt's message, with what it means when it only names a closed socket."""
    if any(sign in message for sign in _PEER_LOST):
        return (f"{message} (the connection to the target host's libvirtd was lost: is it "
                "running, and its host reachable? The guest keeps running here)")
    return message


def _stats(dom: Any) -> dict[str, Any]:
    try:
        stats: dict[str, Any] = dom.jobStats(0)
    except libvirt.libvirtError:  # the domain just left: the call ends at once
        return {}
    return stats


def _abort(dom: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom.abortJob()


def _completed(uri: str, name: str) -> dict[str, Any]:
    """The statistics of the finished migration as the destination recorded them (with the
    downtime); empty when they cannot be read (the migration succeeded all the same)."""
    try:
        dconn = libvirt.open(uri)
    except libvirt.libvirtError:
        return {}
    try:
        stats: dict[str, Any] = dconn.lookupByName(name).jobStats(
            libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        return stats
    except libvirt.libvirtError:
        return {}
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dconn.close()


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None

