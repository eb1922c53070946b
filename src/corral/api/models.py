"""Pydantic types of the REST API (request types are named resource + verb, as in Incus)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from corral.cloudinit import validate as cloudcheck
from corral.errors import InvalidInput
from corral.images import guestspec
from corral.validation import MEMORY_MAX, NAME_MAX, SIZE_MAX, parse_size, validate_name

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


class _Request(BaseModel):
    """A request body: unknown fields refused, and no text that XML cannot hold (NUL and
    other control characters, lone surrogates, U+FFFE/U+FFFF) in any string field: names,
    descriptions and user-data reach domain XML, OVF descriptors and files."""

    model_config = ConfigDict(extra="forbid")

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
    """What a VM is doing; ``creating`` and ``deleting`` are set by the engine."""

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
    ssh_authorized_keys: list[str] = Field(default_factory=list, description="OpenSSH public keys")
    password_hash: str | None = Field(None, description="crypt(3) hash, e.g. from `openssl passwd -6`")
    user_data: str | None = Field(None, description="#cloud-config (merged) or any user-data (as is)")
    network_config: str | None = Field(None, description="network config v1/v2; default: DHCP")
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




class VmAddress(BaseModel):
    ip: str
    prefix: int | None = None
    mac: str | None = None
    interface: str | None = None
    source: str  # "dhcp" (the network's lease), "reserved" (a static lease not handed out yet),
    # "agent" (guest agent), "arp" (host ARP table)


_CPU_MODEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


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
    cpu_max: int | None = Field(None, ge=1, le=64, description="vCPU hot-plug: the most vCPUs "
                                "a running VM can be given (vm set --cpus); default: cpus")

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
    cpu_max: int | None = Field(None, ge=1, le=64, description="null: no hot-plug headroom")


class VmPatch(_Request):
    """Changes to a VM; a field left out is left as it is. Each applies live (description,
    memory_target, cpus up to the cpu_max the VM booted with), at next boot (memory, other
    cpus, cpu_model, cpu_max, sockets, threads, boot, graphics: listed in the VM's
    ``pending``), or only while the VM is stopped (firmware, secure_boot, tpm, machine,
    cloud_init: 409 otherwise)."""

    cloud_init: CloudInit | None = Field(None, description="Replaces the settings (null: no seed)")
    cpus: int | None = Field(None, ge=1, le=64)
    memory: str | int | None = Field(None, description="e.g. 2G (next boot when running)")
    memory_target: str | int | None = Field(
        None, description="Balloon target: the memory the guest may use, at most memory "
        "(live); null: all of it")
    description: str | None = Field(None, max_length=1024)
    hardware: HardwarePatch | None = None

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

    _name = _name_field("name")
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
    cloud_init: CloudInit | None = None
    pool: str = "default"  # storage pool of the root disk
    hardware: Hardware = Field(default_factory=Hardware)
    description: str = ""
    memory_target_mib: int | None = Field(None, description="Balloon target (None: all memory)")
    pending: list[str] = Field([], description="Settings changed while the VM ran that apply "
                               "when it is next started (e.g. memory, hardware.cpu_model)")


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
    content: str = Field(description="File content, base64")
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


class ImageBuildTiny(_Request):
    name: Name = "tiny"

    _name = _name_field("name")


class Image(BaseModel):
    id: str
    name: str
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


class Host(BaseModel):
    name: str
    url: str
    status: str
    virt_type: str | None
    virt_note: str | None
    cpus: int | None
    memory_mib: int | None
    last_seen: datetime | None
    qos: str | None = None  # how NIC bandwidth limits are enforced: libvirt or nftables


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


class Event(BaseModel):
    type: str
    time: datetime
    data: dict[str, Any]


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
