"""A thin wrapper of a libvirt connection; libvirt errors are mapped to corral.errors here."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import libvirt

from corral.agent.hypervisor import guest_agent, host_caps
from corral.agent_api.domains import DomainInfo
from corral.domainxml import Domain, MemoryDevice, vm_id_of
from corral.errors import (
    CorralError,
    HypervisorError,
    InvalidInput,
    NotFound,
    Unavailable,
    WrongState,
)

T = TypeVar("T")

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}

# Why a stopped domain stopped (libvirt's shutoff reason): HA tells a crash (QEMU killed:
# crashed; it failed to start: failed) from a guest that powered itself off (shutdown).
_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: "unknown",  # e.g. a host that rebooted under it
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: "from-snapshot",
    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "daemon",
}


def _reason(state: int, reason: int) -> str:
    """libvirt's reason for a stopped or crashed domain in words ("" for the others)."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return _SHUTOFF_REASONS.get(reason, "")
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return "panicked" if reason == libvirt.VIR_DOMAIN_CRASHED_PANICKED else "crashed"
    return ""


# libvirt error codes that mean "the request does not fit the domain's state".
_STATE_ERRORS = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_OPERATION_DENIED}


def _silence(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


libvirt.registerErrorHandler(_silence, None)


def _shutdown(dom: Any) -> None:
    if guest_agent.answers(dom):
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
            return
        except libvirt.libvirtError:
            pass  # the agent went away meanwhile: the power button still works
    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        msg = f"{what}: {exc.get_error_message()}"
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFound(msg) from exc
        if code in _STATE_ERRORS:
            raise WrongState(msg) from exc
        raise HypervisorError(msg) from exc


class ConsoleStream:
    """A domain's serial console as a blocking byte stream; ``abort`` ends it and closes
    the libvirt connection it has to itself."""

    def __init__(self, conn: Any, stream: Any) -> None:
        self._conn, self._stream = conn, stream

    def recv(self, size: int) -> bytes | int:
        data: bytes | int = self._stream.recv(size)
        return data

    def send(self, data: bytes) -> int:
        return int(self._stream.send(data))

    def abort(self) -> None:
        try:
            self._stream.abort()
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()


class Hypervisor:
    """One libvirt connection, reopened when libvirtd restarts."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None
        self._lock = threading.Lock()
        self._vm_ids: dict[str, str | None] = {}  # domain UUID -> corral VM id (metadata)
        # Raises to refuse starting or resuming a domain (a lapsed host lease:
        # corral.agent.guard_link); every start of this host passes here.
        self.start_gate: Callable[[], None] = lambda: None

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
            self._conn = self._open()
            return self._conn

    def _open(self) -> Any:
        """A new connection to libvirtd; 503 when none answers."""
        try:
            return libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise Unavailable(
                f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()} "
                "(is libvirtd running? `corral up` starts it)"
            ) from exc

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        with _mapped(what):
            return fn(self._connection())

    def _domain(self, name: str) -> Any:
        return self._call(f"domain {name}", lambda c: c.lookupByName(name))

    def _info(self, dom: Any) -> DomainInfo:
        code, why = dom.state()[:2]
        state = _STATES.get(code, "unknown")
        uuid = dom.UUIDString()
        # A domain's corral id never changes for its UUID: read the XML once, not per report
        # (the reconciler lists every domain every few seconds).
        if uuid not in self._vm_ids:
            try:
                self._vm_ids[uuid] = vm_id_of(dom.XMLDesc(0))
            except CorralError:
                self._vm_ids[uuid] = None
        return DomainInfo(name=dom.name(), uuid=uuid, vm_id=self._vm_ids[uuid], state=state,
                          reason=_reason(code, why))

    def version(self) -> str:
        return host_caps.dotted(self._call("version", lambda c: c.getLibVersion()))

    def host_cpu(self) -> host_caps.HostCpu:
        """The host CPU as libvirt names it (capabilities: model, vendor, features)."""
        return host_caps.parse_host_cpu(self._call("capabilities",
                                                   lambda c: c.getCapabilities()))

    def cpu_models(self, virt_type: str) -> list[str] | None:
        """The named CPU models a guest may have under ``virt_type`` (kvm, qemu); None when
        libvirt cannot say (a driver without domain capabilities): unknown, not none."""
        try:
            xml = self._call("domain capabilities", lambda c: c.getDomainCapabilities(
                None, None, None, virt_type, 0))
        except CorralError:
            return None
        return host_caps.parse_cpu_models(xml)

    def hypervisor(self) -> tuple[str, str]:
        """(type, version) of what libvirt drives: ("QEMU", "7.2.0") on the qemu driver."""
        kind, v = self._call("hypervisor version", lambda c: (c.getType(), c.getVersion()))
        return str(kind), host_caps.dotted(int(v))

    def list_domains(self) -> list[DomainInfo]:
        """Every domain libvirt knows, running or not; transient ones vanish while listed."""
        infos = []
        for dom in self._call("list domains", lambda c: c.listAllDomains(0)):
            try:
                with _mapped("domain"):
                    infos.append(self._info(dom))
            except NotFound:
                continue
        return infos

    def get(self, name: str) -> DomainInfo:
        dom = self._domain(name)
        with _mapped(f"domain {name}"):
            return self._info(dom)

    def define(self, xml: str) -> DomainInfo:
        dom = self._call("define domain", lambda c: c.defineXML(xml))
        with _mapped("define domain"):
            self._vm_ids.pop(dom.UUIDString(), None)  # the new XML may carry new metadata
            return self._info(dom)

    def _act(self, name: str, what: str, fn: Callable[[Any], object]) -> DomainInfo:
        dom = self._domain(name)
        with _mapped(f"{what} {name}"):
            fn(dom)
            return self._info(dom)

    def start(self, name: str) -> DomainInfo:
        self.start_gate()
        return self._act(name, "start", lambda d: d.create())

    def shutdown(self, name: str) -> DomainInfo:
        """Ask the guest to power off: through its guest agent when one answers (a clean
        shutdown even where nothing listens to the power button), else ACPI power button."""
        return self._act(name, "shutdown", _shutdown)

    def destroy(self, name: str) -> DomainInfo:
        return self._act(name, "force off", lambda d: d.destroy())

    def reboot(self, name: str) -> DomainInfo:
        return self._act(name, "reboot", lambda d: d.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN))

    def reset(self, name: str) -> DomainInfo:
        return self._act(name, "reset", lambda d: d.reset(0))

    def suspend(self, name: str) -> DomainInfo:
        return self._act(name, "pause", lambda d: d.suspend())

    def resume(self, name: str) -> DomainInfo:
        self.start_gate()

        def resume(dom: Any) -> None:
            dom.resume()
            guest_agent.sync_time(dom)  # its clock stood still while paused

        return self._act(name, "resume", resume)

    def guest_agent_answers(self, name: str) -> bool:
        dom = self._domain(name)
        with _mapped(f"guest agent of {name}"):
            return guest_agent.answers(dom)

    def guest_exec(self, name: str, argv: list[str], stdin: str | None,
                   timeout: float) -> dict[str, Any]:
        dom = self._domain(name)
        with _mapped(f"run a command in {name}"):
            return guest_agent.run(dom, name, argv, stdin, timeout)

    def set_vcpus(self, name: str, count: int) -> dict[str, int | None]:
        """Plug vCPUs into the running domain (up to its maximum); the definition is the
        engine's to change (it defines the domain again)."""
        return self._live(name, f"set vCPUs of {name} to {count}",
                          lambda d: d.setVcpusFlags(count, libvirt.VIR_DOMAIN_AFFECT_LIVE))

    def set_memory_target(self, name: str, mib: int) -> dict[str, int | None]:
        """Inflate or deflate the running domain's balloon to ``mib``; the guest gives the
        memory back (or takes it) within seconds when its virtio_balloon driver runs."""
        return self._live(name, f"set memory target of {name} to {mib} MiB",
                          lambda d: d.setMemoryFlags(mib * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE))

    def plug_memory(self, name: str, dimm_xml: str, total_mib: int) -> dict[str, int | None]:
        """Plug a DIMM (the engine's ``<memory model='dimm'>``) into the running domain so
        that it has ``total_mib``; the guest onlines the new memory blocks (udev's rules, or
        the kernel's memhp_default_state). One that has ``total_mib`` already is left as it
        is (a retry plugs nothing twice); the definition is the engine's to change."""
        dimm = MemoryDevice.from_xml(dimm_xml)
        if dimm.model != "dimm" or dimm.target_size is None or dimm.target_size_unit != "KiB":
            raise InvalidInput("the memory device is not a DIMM with a size in KiB", field="xml")
        size_mib = dimm.target_size // 1024

        def plug(dom: Any) -> None:
            have = int(dom.info()[1]) // 1024
            if have == total_mib:
                return
            if have + size_mib != total_mib:
                raise WrongState(f"VM {name} has {have} MiB of memory: a DIMM of {size_mib} "
                                 f"MiB does not make it {total_mib} MiB")
            dom.attachDeviceFlags(dimm.to_xml(), libvirt.VIR_DOMAIN_AFFECT_LIVE)

        return self._live(name, f"plug {size_mib} MiB of memory into {name}", plug)

    def resources(self, name: str) -> dict[str, int | None]:
        return self._live(name, f"resources of {name}", lambda d: None)

    def _live(self, name: str, what: str,
              fn: Callable[[Any], object]) -> dict[str, int | None]:
        dom = self._domain(name)
        with _mapped(what):
            if not dom.isActive():
                raise WrongState(f"{what}: VM {name} is not running")
            fn(dom)
            _state, max_kib, balloon_kib, vcpus, _cpu_time = dom.info()
            most = dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE
                                  | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
            live = Domain.from_xml(dom.XMLDesc(0))  # memory hot-plug room: <maxMemory>
            hotplug_kib = live.max_memory_kib
            slots_free = (live.max_memory_slots or 0) - len(live.devices.memories)
            return {"vcpus": int(vcpus), "vcpus_max": int(most),
                    "memory_mib": int(max_kib) // 1024, "balloon_mib": int(balloon_kib) // 1024,
                    "memory_max_mib": None if hotplug_kib is None else hotplug_kib // 1024,
                    "memory_slots_free": max(0, slots_free)}

    def memory_of_running(self) -> tuple[int, int]:
        """(MiB the running domains were started with, MiB their balloons leave them)."""
        booted = balloon = 0
        with _mapped("list running domains"):
            for dom in self._connection().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):  # it stopped meanwhile
                    _state, max_kib, cur_kib, _vcpus, _cpu = dom.info()
                    booted, balloon = booted + max_kib, balloon + cur_kib
        return booted >> 10, balloon >> 10

    def cpu_times(self) -> dict[str, int]:
        """CPU time (ns) each running domain of a corral VM used since it started, by VM
        id: the agent's reporter turns two of these into each VM's load."""
        times: dict[str, int] = {}
        with _mapped("list running domains"):
            for dom in self._connection().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):  # it stopped meanwhile
                    vm_id = self._info(dom).vm_id
                    if vm_id:
                        times[vm_id] = int(dom.info()[4])
        return times

    def domain_stats(self) -> dict[str, dict[str, Any]]:
        """libvirt's counters of each running corral VM's domain, by name, as flat records
        (``cpu.time``, ``balloon.*``, ``block.N.rd.bytes``, ``net.N.tx.bytes``...): one
        bulk call for every domain; corral.agent.vm_stats turns two readings into rates."""
        flags = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
                 | libvirt.VIR_DOMAIN_STATS_BLOCK | libvirt.VIR_DOMAIN_STATS_INTERFACE)
        found: dict[str, dict[str, Any]] = {}
        with _mapped("domain stats"):
            records = self._connection().getAllDomainStats(
                flags, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
            for dom, record in records:
                with contextlib.suppress(libvirt.libvirtError):  # it stopped meanwhile
                    if self._info(dom).vm_id:
                        found[dom.name()] = dict(record)
        return found

    def undefine(self, name: str) -> None:
        dom = self._domain(name)
        with _mapped(f"undefine {name}"):
            if dom.isActive():
                raise WrongState(f"domain {name} is running; stop it before deleting")
            # internal snapshots live in the disk, deleted with it: drop their metadata too;
            # the UEFI variables and the TPM's state go with the VM (TPM: libvirt >= 8.9)
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                              | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_TPM", 0))

    def xml(self, name: str) -> str:
        dom = self._domain(name)
        with _mapped(f"domain {name}"):
            return str(dom.XMLDesc(0))

    def graphics(self, name: str) -> list[dict[str, Any]]:
        """The running domain's displays as its live XML says (the port VNC got)."""
        dom = self._domain(name)
        with _mapped(f"displays of {name}"):
            if not dom.isActive():
                raise WrongState(f"VM {name} is not running: it has no display now")
            return [{"type": g.type, "port": g.port, "listen": g.listen_address or g.listen}
                    for g in Domain.from_xml(dom.XMLDesc(0)).devices.graphics]

    def interface_addresses(self, name: str) -> list[dict[str, Any]]:
        """Guest addresses from the guest agent, then the host's ARP table; best effort.

        A guest without a running qemu-guest-agent (or a stopped domain) gives none.
        """
        dom = self._domain(name)
        found: list[dict[str, Any]] = []
        for source, flag in (("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
                             ("arp", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP)):
            try:
                ifaces = dom.interfaceAddresses(flag, 0) or {}
            except libvirt.libvirtError:
                continue
            for ifname, info in ifaces.items():
                for addr in info.get("addrs") or []:
                    found.append({"ip": addr.get("addr"), "prefix": addr.get("prefix"),
                                  "mac": info.get("hwaddr"), "interface": ifname,
                                  "source": source,
                                  "family": "ipv6" if addr.get("type") == 1 else "ipv4"})
        return found

    def open_console(self, name: str) -> ConsoleStream:
        """A blocking stream on the domain's serial console (for the console relay), on a
        libvirt connection of its own: a recv blocked on a quiet guest must not hold up the
        agent's other calls on the shared connection (they waited up to 2 s each)."""
        conn = self._open()
        with _mapped(f"console of {name}"):
            try:
                stream = conn.newStream(0)
                conn.lookupByName(name).openConsole(None, stream,
                                                    libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            except libvirt.libvirtError:
                conn.close()
                raise
            return ConsoleStream(conn, stream)
