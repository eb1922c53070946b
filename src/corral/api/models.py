"""Pydantic types of the REST API (request types are named resource + verb, as in Incus)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corral.api.evacuation_mode import EvacuationMode
from corral.api.host_state import HostState
from corral.api.restart_policy import RestartPolicy
from corral.api.tags import TAG_SCHEMA, validate_tag
from corral.cloudinit import validate as cloudcheck
from corral.cpulist import format_cpu_list, parse_cpu_list
from corral.errors import InvalidInput
from corral.images import guestspec
from corral.validation import MEMORY_MAX, NAME_MAX, SIZE_MAX, parse_size, validate_name

HA_PRIORITY_MIN, HA_PRIORITY_MAX = 0, 1000  # vms.ha_priority
# XML 1.0's Char production, negated: what no XML document may contain.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# A resource name in the OpenAPI document (the validator of _name_field says why one is
# refused): 1-63 ASCII letters, digits, '-' or '_', starting with a letter or digit.
NAME_SCHEMA = {"pattern": "^[A-Za-z0-9][A-Za-z0-9_-]*$", "minLength": 1, "maxLength": NAME_MAX}
Name = Annotated[str, Field(json_schema_extra=NAME_SCHEMA)]


def _name_field(field: str) -> Any:
    """A pydantic validator for a resource name (InvalidInput becomes a field error)."""

    def check(value: object) -> str | None:
        if value is None:  # optional fields; required ones are typed `str` and never get here
            return None
        try:
            return validate_name(value, field)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    return field_validator(field)(check)


def _size(value: object, field: str, unit: str, most: int = SIZE_MAX) -> int:
    try:
        return parse_size(value, field, unit, most)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


# The longest string a request field takes unless the field says otherwise (names: 63,
# descriptions: 1 KiB; free text takes more: user-data, files, a program's stdin): paths and
# URLs fit (Linux's PATH_MAX). Longer is a 422 naming the field, before any validator runs.
TEXT_MAX = 4096
# SSH public keys (cloud-init, corral.cloudinit.validate.MAX_KEY_LEN) and guest files (all of
# them together at most guestspec.FILES_MAX_BYTES, sent as base64).
SshKey = Annotated[str, Field(max_length=cloudcheck.MAX_KEY_LEN)]
BASE64_MAX = 4 * -(-guestspec.FILES_MAX_BYTES // 3)


class _Request(BaseModel):
    """A request body: unknown fields refused (422 naming them), every string bounded
    (:data:`TEXT_MAX` unless the field sets its own ``max_length``), and no text that XML
    cannot hold (NUL and other control characters, lone surrogates, U+FFFE/U+FFFF) in any
    string field: names, descriptions and user-data reach domain XML, OVF descriptors and
    files."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    @field_validator("*", mode="after")
    @classmethod
    def _xml_text(cls, v: Any) -> Any:
        for text in (v if isinstance(v, list) else [v]):
            if isinstance(text, str):
                bad = _NOT_XML.search(text)
                if bad:
                    raise ValueError(f"contains U+{ord(bad.group()):04X}, a character XML "
                                     "cannot hold (control characters other than tab and "
                                     "newline are refused)")
        return v


class VmState(StrEnum):
    """What a VM is doing; ``creating`` and ``deleting`` are set by the engine. ``unknown``:
    no host reports it (its host was removed with `host remove --force`, or its domain
    state could not be read); nothing restarts it, `vm delete` removes it."""

    CREATING = "creating"
    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    CRASHED = "crashed"
    DELETING = "deleting"
    UNKNOWN = "unknown"
    ERROR = "error"


class PowerAction(StrEnum):
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    PAUSE = "pause"
    RESUME = "resume"


class OperationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (OperationStatus.SUCCESS, OperationStatus.FAILURE,
                        OperationStatus.CANCELLED)


def _ci(check: Any, value: Any, field: str) -> Any:
    try:
        return check(value, field)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class CloudInit(_Request):
    """cloud-init NoCloud settings of a VM: corral builds a seed CD-ROM from them.

    hostname defaults to the VM name, the instance id to the VM id (see corral.cloudinit).
    """

    hostname: str | None = None
    user: str | None = Field(None, description="Create this user (sudo, keys); default: the image's")
    ssh_authorized_keys: list[SshKey] = Field(default_factory=list, description="OpenSSH public keys")
    password_hash: str | None = Field(None, description="crypt(3) hash, e.g. from `openssl passwd -6`")
    user_data: str | None = Field(None, max_length=cloudcheck.MAX_DOC, description=(
        "#cloud-config (merged) or any user-data (as is); at most 256 KiB"))
    network_config: str | None = Field(None, max_length=cloudcheck.MAX_DOC, description=(
        "network config v1/v2; default: DHCP; at most 256 KiB"))
    ssh_key_file: str | None = Field(
        None, description="Client-side hint: the public key file the keys came from (for `vm ssh`)")

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        return None if v is None else _ci(cloudcheck.hostname, v, "hostname")

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        return None if v is None else _ci(cloudcheck.user, v, "user")

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return list(_ci(cloudcheck.ssh_keys, v, "ssh_authorized_keys"))

    @field_validator("password_hash")
    @classmethod
    def _password(cls, v: str | None) -> str | None:
        return None if v is None else _ci(cloudcheck.password_hash, v, "password_hash")

    @field_validator("user_data")
    @classmethod
    def _user_data(cls, v: str | None) -> str | None:
        return None if v is None else _ci(cloudcheck.user_data, v, "user_data")

    @field_validator("network_config")
    @classmethod
    def _network_config(cls, v: str | None) -> str | None:
        return None if v is None else _ci(cloudcheck.network_config, v, "network_config")

    @field_validator("ssh_key_file")
    @classmethod
    def _key_file(cls, v: str | None) -> str | None:
        return None if v is None else _ci(cloudcheck.key_file_hint, v, "ssh_key_file")

    @model_validator(mode="after")
    def _combination(self) -> CloudInit:
        raw = self.user_data is not None and not cloudcheck.is_cloud_config(self.user_data)
        if raw and (self.user is not None or self.password_hash is not None):
            raise ValueError("user and password_hash can only be merged into #cloud-config "
                             "user-data; this user-data is used as is: set them in it instead")
        return self


# Written, never read back by a VM's show or list: what a password hash or user-data (which
# often carries passwords, tokens or keys) holds is for those with vm.secrets.
CLOUD_INIT_SECRETS: tuple[str, ...] = ("user_data", "password_hash")
_HIDDEN = "null here; GET /api/v1/vms/{name}/cloud-init (permission vm.secrets) returns it"


class CloudInitShown(BaseModel):
    """cloud-init settings as a VM's show and list give them: write-only secrets hidden.

    ``user_data`` and ``password_hash`` are null; ``user_data_set`` and ``password_hash_set``
    say whether the VM has them. ``GET /api/v1/vms/{name}/cloud-init`` (permission
    ``vm.secrets``: operators and admins) returns the settings whole, as PATCH takes them.
    """

    hostname: str | None = None
    user: str | None = None
    ssh_authorized_keys: list[str] = Field(default_factory=list, description="OpenSSH public keys")
    password_hash: str | None = Field(None, description=_HIDDEN)
    user_data: str | None = Field(None, description=_HIDDEN)
    network_config: str | None = None
    ssh_key_file: str | None = None
    password_hash_set: bool = False
    user_data_set: bool = False

    @classmethod
    def of(cls, ci: CloudInit) -> CloudInitShown:
        fields = ci.model_dump(exclude=set(CLOUD_INIT_SECRETS))
        return cls(**fields, **{f"{k}_set": getattr(ci, k) is not None
                                for k in CLOUD_INIT_SECRETS})

    def settings(self) -> CloudInit:
        """The settings shown, secrets left out (what a PATCH keeps of them without them)."""
        return CloudInit.model_construct(**self.model_dump(
            exclude_none=True, exclude={f"{k}_set" for k in CLOUD_INIT_SECRETS}))




class VmAddress(BaseModel):
    ip: str
    prefix: int | None = None
    mac: str | None = None
    interface: str | None = None
    source: str  # "dhcp" (the network's lease), "reserved" (a static lease not handed out yet),
    # "agent" (guest agent), "arp" (host ARP table)


_CPU_MODEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Watchdog = Literal["none", "reset", "poweroff", "shutdown", "pause", "dump", "inject-nmi"]
Video = Literal["vga", "virtio", "bochs", "qxl", "none"]


MAX_NUMA_CELLS = 64  # at most one per vCPU


def _memory_max_mib(value: object) -> object:
    """``memory_max``: a size (``4G``; a bare number is MiB), kept in MiB."""
    if value is None:
        return None
    mib = _size(value, "memory_max", "M", MEMORY_MAX) >> 20
    if mib < 16:
        raise ValueError("memory_max must be at least 16M")
    return mib


def _placement_value(value: object, info: ValidationInfo) -> object:
    """``cpu_pin``: ``auto``, or a host CPU list written the short way (``0,1,2,3`` ->
    ``0-3``); ``numa``: ``auto`` or a count of cells (``"2"`` from a command line is 2)."""
    if value is None or value == "auto":
        return value
    if info.field_name == "numa":
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 1 <= value <= MAX_NUMA_CELLS:
            raise ValueError(f"numa must be auto or a number of guest cells from 1 to "
                             f"{MAX_NUMA_CELLS}, not {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError("cpu_pin must be auto or a host CPU list like 0-3,8-11")
    try:
        cpus = parse_cpu_list(value)
    except ValueError as exc:
        raise ValueError(f"cpu_pin: {exc} (give auto or a list like 0-3,8-11)") from None
    if not cpus:
        raise ValueError("cpu_pin is empty: give auto or a list like 0-3,8-11")
    return format_cpu_list(cpus)


class Hardware(_Request):
    """What the VM's virtual machine is: firmware, machine, boot order, CPU, graphics."""

    firmware: Literal["bios", "uefi"] = Field(
        "bios", description="uefi: OVMF, with the VM's own NVRAM file kept with its disks")
    secure_boot: bool = Field(False, description="UEFI Secure Boot with the usual keys "
                              "enrolled (needs firmware uefi and machine q35)")
    tpm: bool = Field(False, description="An emulated TPM 2.0 (swtpm); its state is kept "
                      "by the host and removed with the VM")
    machine: Literal["q35", "i440fx"] = "q35"
    boot: list[Literal["disk", "cdrom", "network"]] = Field(
        [], max_length=3, description="Boot order; empty: the disks, then CD-ROMs (images "
        "with a kernel of their own boot it directly)")
    cpu_model: str = Field("host-model", pattern=_CPU_MODEL, description=(
        "host-model (the host's CPU as a named model: migratable to like hosts), "
        "host-passthrough (everything the host has), or a libvirt CPU model (e.g. Haswell)"))
    sockets: int = Field(1, ge=1, le=64, description="CPU sockets; cores = cpus / (sockets "
                         "x threads)")
    threads: int = Field(1, ge=1, le=8, description="Threads per core")
    graphics: Literal["vnc", "none"] = Field(
        "vnc", description="vnc: a VNC display on the host's loopback, reached through the "
        "engine; none: the serial console only")
    watchdog: Watchdog = Field("none", description="none: no watchdog; else an i6300esb "
                               "watchdog and what the host does when the guest stops "
                               "feeding it (libvirt's actions)")
    video: Video = Field("vga", description="The video card of the VNC display (none: no "
                         "card); a VM with graphics none has no card whatever this says")
    cpu_max: int | None = Field(None, ge=1, le=64, description="vCPU hot-plug: the most vCPUs "
                                "a running VM can be given (vm set --cpus); default: cpus")
    cpu_pin: str | None = Field(None, description=(
        "vCPU -> host CPU pinning, one host CPU per vCPU (cpu_max of them with hot-plug): "
        "auto (picked from the host's CPUs, within one NUMA node where they fit) or a host "
        "CPU list like 0-3,8-11 (vCPU i on its i-th CPU); QEMU's emulator threads run on "
        "the host's other CPUs. Default: none, vCPUs float"))
    numa: Literal["auto"] | int | None = Field(None, description=(
        "Guest NUMA cells, vCPUs and memory split evenly: a count, or auto (as many as the "
        "host has nodes, at most one per vCPU); each cell's memory is bound (strict) to a "
        "host node where the host has as many nodes. Default: none"))
    hugepages: Literal["2M", "1G"] | None = Field(None, description=(
        "Back the memory with huge pages of this size (memory a multiple of it); a start "
        "is refused while the host has too few free"))
    memory_max: int | None = Field(None, description=(
        "Memory hot-plug, in MiB (or a size like 4G): the most memory a running VM can be "
        "given (vm set --memory grows it live in steps of 128 MiB); default: none"))

    _placement = field_validator("cpu_pin", "numa", mode="before")(_placement_value)
    _memory_max = field_validator("memory_max", mode="before")(_memory_max_mib)

    @model_validator(mode="after")
    def _together(self) -> Hardware:
        if self.secure_boot and self.firmware != "uefi":
            raise ValueError("secure_boot needs firmware uefi")
        if self.secure_boot and self.machine != "q35":
            raise ValueError("secure_boot needs machine q35")
        if len(set(self.boot)) != len(self.boot):
            raise ValueError("boot names a device twice")
        return self


class HardwarePatch(_Request):
    """Hardware fields to change; one left out is left as it is (their rules: Hardware)."""

    firmware: Literal["bios", "uefi"] | None = None
    secure_boot: bool | None = None
    tpm: bool | None = None
    machine: Literal["q35", "i440fx"] | None = None
    boot: list[Literal["disk", "cdrom", "network"]] | None = Field(None, max_length=3)
    cpu_model: str | None = Field(None, pattern=_CPU_MODEL)
    sockets: int | None = Field(None, ge=1, le=64)
    threads: int | None = Field(None, ge=1, le=8)
    graphics: Literal["vnc", "none"] | None = None
    watchdog: Watchdog | None = None
    video: Video | None = None
    cpu_max: int | None = Field(None, ge=1, le=64, description="null: no hot-plug headroom")
    cpu_pin: str | None = Field(None, description="auto or a host CPU list; null: none")
    numa: Literal["auto"] | int | None = Field(None, description="null: no guest NUMA")
    hugepages: Literal["2M", "1G"] | None = Field(None, description="null: normal pages")
    memory_max: int | None = Field(None, description="MiB or a size like 4G; null: no "
                                   "memory hot-plug")

    _placement = field_validator("cpu_pin", "numa", mode="before")(_placement_value)
    _memory_max = field_validator("memory_max", mode="before")(_memory_max_mib)


class VmPatch(_Request):
    """Changes to a VM; a field left out is left as it is. Each applies live (description,
    memory_target, cpus up to the cpu_max the VM booted with, more memory up to the
    memory_max it booted with, in steps of 128 MiB), at next boot (other memory, other
    cpus, cpu_model, cpu_max, memory_max, sockets, threads, boot, graphics, cpu_pin, numa,
    hugepages: listed in the VM's ``pending``), or only while the VM is stopped (firmware,
    secure_boot, tpm, machine, cloud_init: 409 otherwise)."""

    cloud_init: CloudInit | None = Field(None, description="Replaces the settings (null: no seed)")
    cpus: int | None = Field(None, ge=1, le=64)
    memory: str | int | None = Field(None, description="e.g. 2G (more memory live up to "
                                     "hardware.memory_max, else next boot when running)")
    memory_target: str | int | None = Field(
        None, description="Balloon target: the memory the guest may use, at most memory "
        "(live); null: all of it")
    description: str | None = Field(None, max_length=1024)
    hardware: HardwarePatch | None = None
    evacuation: EvacuationMode | None = Field(None, description="What `host maintenance` "
                                              "does with it: auto, migrate or stop")
    ha: bool | None = Field(None, description="High availability: restarted when it goes "
                            "down unasked (every disk must be on a shared or rbd pool)")
    ha_priority: int | None = Field(None, ge=HA_PRIORITY_MIN, le=HA_PRIORITY_MAX,
                                    description="Order of HA restarts, higher first")
    restart_policy: RestartPolicy | None = Field(None, description="always or on-failure "
                                                 "(not after the guest's own power-off)")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | int | None:
        if v is not None and _size(v, "memory", "M", MEMORY_MAX) < 16 << 20:
            raise ValueError("memory must be at least 16M")
        return v

    @field_validator("memory_target")
    @classmethod
    def _target(cls, v: str | int | None) -> str | int | None:
        if v is not None and _size(v, "memory_target", "M", MEMORY_MAX) < 16 << 20:
            raise ValueError("memory_target must be at least 16M")
        return v

    @property
    def memory_mib(self) -> int | None:
        return None if self.memory is None else \
            parse_size(self.memory, "memory", "M", MEMORY_MAX) >> 20

    @property
    def memory_target_mib(self) -> int | None:
        return None if self.memory_target is None else \
            parse_size(self.memory_target, "memory_target", "M", MEMORY_MAX) >> 20


class VmCreate(_Request):
    name: Name
    image: Name | None = Field(None, description="Image the root disk is a linked clone of")
    iso: Name | None = Field(None, description="ISO image to install from: attached as a CD-ROM, "
                            "the root disk is blank (needs disk)")
    cpus: int = Field(1, ge=1, le=64)
    memory: str | int = "512M"
    disk: str | int | None = Field(None, description="Root disk size (grows the image); default: image size")
    network: Name = "default"
    start: bool = False
    cloud_init: CloudInit | None = Field(None, description="Attach a cloud-init NoCloud seed")
    pool: Name | None = Field(None, description="Storage pool of the root disk (dir, shared or "
                             "rbd); default: the host's storage dir (pool `default`)")
    security_groups: list[str] = Field([], description="Security groups of the first NIC")
    hardware: Hardware = Field(default_factory=Hardware)
    description: str = Field("", max_length=1024)
    # Placement (corral.engine.scheduler): hard rules; the policy chooses among the hosts
    # that pass them all.
    host: Name | None = Field(None, description="Pin to this host (it must still pass every "
                              "rule: capacity, tags, group...)")
    host_tags: list[Annotated[str, Field(json_schema_extra=TAG_SCHEMA)]] = Field(
        [], max_length=32, description="Tags the host must have (`corral host tag`)")
    group: Name | None = Field(None, description="Affinity group of the VM (`corral vm group`)")
    evacuation: EvacuationMode = Field(EvacuationMode.AUTO, description="What `host "
                                       "maintenance` does with it: auto (live migration, "
                                       "else stop, move, start), migrate (live only), stop "
                                       "(stopped, stays on its host)")
    ha: bool = Field(False, description="High availability: restarted in place when it "
                     "goes down unasked, on another host when its host fails (every disk "
                     "must be on a shared or rbd pool: give pool)")
    ha_priority: int = Field(0, ge=HA_PRIORITY_MIN, le=HA_PRIORITY_MAX,
                             description="Order of HA restarts, higher first")
    restart_policy: RestartPolicy = Field(RestartPolicy.ALWAYS, description="always (any "
                                          "stop not asked through corral) or on-failure "
                                          "(not after the guest's own power-off)")

    _name = _name_field("name")
    _host = _name_field("host")
    _group = _name_field("group")
    _pool = _name_field("pool")
    _image = _name_field("image")
    _iso = _name_field("iso")
    _network = _name_field("network")

    @field_validator("security_groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            try:
                validate_name(g, "security_groups")
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        return list(dict.fromkeys(v))

    @field_validator("host_tags")
    @classmethod
    def _host_tags(cls, v: list[str]) -> list[str]:
        for tag in v:
            try:
                validate_tag(tag, "host_tags")
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        return sorted(set(v))

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int) -> str | int:
        if _size(v, "memory", "M", MEMORY_MAX) < 16 << 20:
            raise ValueError("memory must be at least 16M")
        return v

    @field_validator("disk")
    @classmethod
    def _disk(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            _size(v, "disk", "G")
        return v

    @property
    def memory_mib(self) -> int:
        return parse_size(self.memory, "memory", "M", MEMORY_MAX) >> 20

    @property
    def disk_bytes(self) -> int | None:
        return None if self.disk is None else parse_size(self.disk, "disk", "G")


class VmStatePut(_Request):
    action: PowerAction
    force: bool = False
    timeout: int = Field(60, ge=0, le=3600, description="Seconds of graceful shutdown before forcing")


class Vm(BaseModel):
    id: str
    name: str
    project: str = Field("default", description="Its project: names are unique per project")
    image: str
    cpus: int
    memory_mib: int
    disk_bytes: int
    network: str | None
    mac: str | None
    host: str | None
    state: VmState
    desired_power: str
    created_at: datetime
    cloud_init: CloudInitShown | None = None
    pool: str = "default"  # storage pool of the root disk
    hardware: Hardware = Field(default_factory=Hardware)
    description: str = ""
    memory_target_mib: int | None = Field(None, description="Balloon target (None: all memory)")
    pending: list[str] = Field([], description="Settings changed while the VM ran that apply "
                               "when it is next started (e.g. memory, hardware.cpu_model)")
    group: str | None = Field(None, description="Its affinity group (`corral vm group`)")
    evacuation: EvacuationMode = Field(EvacuationMode.AUTO, description="What `host "
                                       "maintenance` does with it (auto, migrate, stop)")
    ha: bool = Field(False, description="High availability (docs/ha.md)")
    ha_priority: int = Field(0, description="Order of HA restarts, higher first")
    restart_policy: RestartPolicy = Field(RestartPolicy.ALWAYS,
                                          description="When an HA VM is restarted")
    ha_reason: str | None = Field(None, description="Why HA left it down (None: it did not)")
    guest_agent: bool | None = Field(None, description="Whether the QEMU guest agent in the "
                                     "guest answers (single-VM reads only; None: not asked, "
                                     "or the VM is not running)")


class ImageImport(_Request):
    name: Name
    source: str = Field(description="http(s) URL (downloaded by the host's agent) or absolute "
                                    "path of an image file on the host")
    format: str = Field("auto", pattern="^(auto|qcow2|raw|vmdk|vdi|iso)$",
                        description="auto: probe it; non-qcow2 images are converted to qcow2, "
                                    "ISOs kept as they are (CD-ROMs)")
    checksum: str | None = Field(None, pattern="^sha256:[0-9a-fA-F]{64}$",
                                 description="sha256:HEX, verified before the image is kept")

    _name = _name_field("name")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        from urllib.parse import urlsplit

        url = urlsplit(v)
        if url.scheme in ("http", "https"):
            if not url.hostname:
                raise ValueError("source URL has no host")
        elif url.scheme or not v.startswith("/"):
            raise ValueError("source must be an http(s) URL or an absolute path")
        if any(ord(c) < 32 for c in v) or len(v) > 4096:
            raise ValueError("source has control characters or is too long")
        return v


def _guest(check: Any, value: Any, field: str) -> Any:
    try:
        return check(value, field)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class GuestPassword(_Request):
    user: str
    password: str = Field(description="Plain text; kept only while the operation runs")

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        return str(_guest(guestspec.user, v, "user"))

    @field_validator("password")
    @classmethod
    def _password(cls, v: str) -> str:
        return str(_guest(guestspec.password, v, "password"))


class GuestFile(_Request):
    path: str = Field(description="Absolute path in the guest (parent directories are made)")
    content: str = Field(max_length=BASE64_MAX, description="File content, base64")
    mode: str = Field("0644", description="Octal permissions")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return str(_guest(guestspec.guest_path, v, "path"))

    @field_validator("content")
    @classmethod
    def _content(cls, v: str) -> str:
        _guest(guestspec.content, v, "content")
        return v

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        return str(_guest(guestspec.mode, v, "mode"))


class GuestCustomize(_Request):
    """Offline changes to a guest disk (libguestfs), applied in this order: hostname, files,
    passwords, commands (run inside the guest's own root, with no network)."""

    hostname: str | None = None
    files: list[GuestFile] = Field(default_factory=list, max_length=guestspec.ITEMS_MAX)
    passwords: list[GuestPassword] = Field(default_factory=list, max_length=guestspec.ITEMS_MAX)
    commands: list[str] = Field(default_factory=list, max_length=guestspec.ITEMS_MAX)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        return None if v is None else str(_guest(guestspec.hostname, v, "hostname"))

    @field_validator("commands")
    @classmethod
    def _commands(cls, v: list[str]) -> list[str]:
        return [str(_guest(guestspec.command, c, "commands")) for c in v]

    @model_validator(mode="after")
    def _something(self) -> GuestCustomize:
        if not (self.hostname or self.files or self.passwords or self.commands):
            raise ValueError("nothing to do: give a hostname, files, passwords or commands")
        size = sum(len(f.content) * 3 // 4 for f in self.files)
        if size > guestspec.FILES_MAX_BYTES:
            raise ValueError(f"files hold {size} bytes, more than {guestspec.FILES_MAX_BYTES}")
        return self


class Shared(_Request):
    """``PUT .../{name}/shared``: whether every project may use the image or network."""

    shared: bool


class ImageBuildTiny(_Request):
    name: Name = "tiny"
    guest_agent: bool = Field(False, description="Add qemu-guest-agent (started at boot) to "
                              "the guest, for `vm exec` and agent tests")

    _name = _name_field("name")


class Image(BaseModel):
    id: str
    name: str
    project: str = Field("default", description="The project it belongs to")
    shared: bool = Field(False, description="Shared by an admin: every project may use it")
    format: str
    virtual_size: int
    file_size: int
    kernel: bool
    status: str
    created_at: datetime
    template_vm: str | None = None  # a template: the VM it was made from


class NetworkMode(StrEnum):
    """nat: masquerade out, replies in; routed: forwarded both ways without NAT; isolated:
    nothing forwarded off the network; bridge: join an existing host bridge (corral builds
    no address, DHCP or rules)."""

    NAT = "nat"
    ROUTED = "routed"
    ISOLATED = "isolated"
    BRIDGE = "bridge"


class NetworkBackend(StrEnum):
    LINUXBRIDGE = "linuxbridge"
    OVS = "ovs"


class NetworkOverlay(StrEnum):
    VXLAN = "vxlan"


class NetworkCreate(_Request):
    name: Name
    mode: NetworkMode = NetworkMode.NAT
    backend: NetworkBackend = NetworkBackend.LINUXBRIDGE
    subnet: str | None = Field(None, description="IPv4 CIDR; default: a free /24 of 10.210.0.0/16")
    gateway: str | None = Field(None, description="Default: the first address of the subnet")
    dhcp_start: str | None = Field(None, description="Default: the upper half of the subnet")
    dhcp_end: str | None = None
    dns_domain: str | None = Field(None, description="VM names resolve as NAME.DOMAIN")
    vlan: int | None = Field(None, ge=1, le=4094, description="802.1Q tag")
    bridge: str | None = Field(None, description="Bridge to build or, in bridge mode, to join; "
                               "VLAN networks may share one")
    overlay: NetworkOverlay | None = None
    vni: int | None = Field(None, ge=1, le=16777215, description="VXLAN network identifier")

    _name = _name_field("name")


class Reservation(BaseModel):
    """A static DHCP lease of a network (``vm nic add --ip``): MAC -> IP, for a VM's NIC."""

    mac: str
    ip: str
    vm: str


class Network(BaseModel):
    name: str
    project: str = Field("default", description="The project it belongs to")
    shared: bool = Field(False, description="Shared by an admin: every project may use it")
    bridge: str
    subnet: str | None
    gateway: str | None
    dhcp_start: str | None
    dhcp_end: str | None
    nat: bool
    mode: NetworkMode = NetworkMode.NAT
    backend: NetworkBackend = NetworkBackend.LINUXBRIDGE
    vlan: int | None = None
    overlay: NetworkOverlay | None = None
    vni: int | None = None
    dns_domain: str | None = None
    mtu: int | None = None
    status: str = "ready"
    vms: list[str] = []
    reservations: list[Reservation] = []


class HostHugePages(BaseModel):
    size: str = Field(description="Page size: 2M, 1G")
    total: int
    free: int


class HostNumaNode(BaseModel):
    id: int
    cpus: str = Field(description="Its online CPUs, e.g. 0-7")
    memory_mib: int
    hugepages: list[HostHugePages] = []


class HostAllocation(BaseModel):
    """What the VMs defined on a host take of it (stopped ones too: they keep their place)."""

    vms: int = 0
    cpus: int = Field(0, description="vCPUs of its VMs")
    memory_mib: int = Field(0, description="Memory of its VMs")


class Host(BaseModel):
    name: str
    url: str
    status: HostState
    virt_type: str | None
    virt_note: str | None
    cpus: int | None
    memory_mib: int | None
    last_seen: datetime | None
    qos: str | None = None  # how NIC bandwidth limits are enforced: libvirt or nftables
    # Placement facts (absent from an older engine's answer, or for an older agent's host).
    cpu_list: str | None = Field(None, description="Online host CPUs, e.g. 0-15")
    numa_nodes: list[HostNumaNode] = Field([], description="NUMA nodes: CPUs, memory, "
                                           "huge pages")
    # Facts of the cluster issue (None: an older agent did not report them).
    address: str | None = Field(None, description="Where the engine reaches its agent")
    cpu_model: str | None = Field(None, description="libvirt's name of the host CPU")
    cpu_vendor: str | None = None
    cpu_flags: list[str] = Field([], description="CPU features libvirt reports beyond the "
                                 "model's own")
    memory_free_mib: int | None = Field(None, description="Memory available when the agent "
                                        "last reported (`host show` asks it anew)")
    libvirt_version: str | None = None
    qemu_version: str | None = None
    corral_version: str | None = Field(None, description="The agent's corral version")
    allocated: HostAllocation = Field(default_factory=HostAllocation)
    tags: list[str] = Field([], description="Labels VMs can require (`vm create "
                            "--host-tag`), sorted")


class Operation(BaseModel):
    id: str
    type: str
    status: OperationStatus
    progress: int
    message: str | None
    resources: dict[str, list[str]]
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    # Defaults: an older engine's answer still parses.
    may_cancel: bool = Field(False, description="`operation cancel` would be honoured now")
    location: str | None = Field(None, description="The host the operation works on")
    project: str | None = None
    user: str | None = None

    def outcome(self) -> str:
        """Why it ended as it did, in words: its error's message, else its last message,
        else its status."""
        return str((self.error or {}).get("message") or self.message or self.status.value)


class Event(BaseModel):
    type: str
    time: datetime
    data: dict[str, Any]
    project: str | None = Field(None, description="The project it concerns; none: the "
                                "engine's or a host's (seen by engine-wide readers only)")


class Status(BaseModel):
    version: str
    hosts: list[Host]
    vms: int
    running_vms: int
    images: int
    data_dir: str


class ErrorDetail(BaseModel):
    """What went wrong: ``code`` is stable (corral.errors), ``message`` meant for a person,
    ``field`` the request field at fault."""

    code: str
    message: str
    field: str | None = None
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """Every error answer of the API, whatever its status."""

    error: ErrorDetail


class ConsoleTicket(BaseModel):
    ticket: str = Field(description="Open /api/v1/vms/NAME/console?ticket=TICKET with it, once")
    expires_in: int = Field(description="Seconds it stays valid")
