"""Database tables of the engine. Desired state lives here; actual state is what agents report."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A time zone-aware UTC timestamp, read back aware: SQLite keeps no zone and hands
    back naive datetimes, which the API would then show without their ``Z``."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UtcDateTime}


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    url: Mapped[str] = mapped_column(String(255))
    # sha256 of the DER certificate the engine's CA issued it at join: the one client
    # certificate the engine takes from this host (a removed host's no longer matches).
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="up")
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_seen: Mapped[datetime | None] = mapped_column(nullable=True)
    # Labels VMs can require (`vm create --host-tag ssd`), sorted; set by `corral host tag`.
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")


class Image(Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="importing")
    format: Mapped[str] = mapped_column(String(10), default="qcow2")
    virtual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    file_size: Mapped[int] = mapped_column(BigInteger, default=0)
    # Direct kernel boot (the tiny guest): file names inside the image directory.
    kernel: Mapped[str | None] = mapped_column(String(255), nullable=True)
    initrd: Mapped[str | None] = mapped_column(String(255), nullable=True)
    cmdline: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A template (`corral template create`): the VM it was made from; NULL for other images.
    template_vm: Mapped[str | None] = mapped_column(String(63), nullable=True)
    # The project it belongs to (0015); the name is unique across the engine.
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True,
                                         default="default", server_default="default")
    # Shared by an admin: every project may read it and use it (not change it).
    shared: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class Network(Base):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # Not unique: VLAN networks share a trunk bridge (services/networks.py checks who may).
    bridge: Mapped[str] = mapped_column(String(15))
    # NULL for a bridge-mode network (it joins a host bridge; corral assigns no addresses).
    subnet: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gateway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dhcp_start: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dhcp_end: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mode: Mapped[str] = mapped_column(String(20), default="nat", server_default="nat")
    backend: Mapped[str] = mapped_column(String(20), default="linuxbridge",
                                         server_default="linuxbridge")
    vlan: Mapped[int | None] = mapped_column(Integer, nullable=True)
    overlay: Mapped[str | None] = mapped_column(String(20), nullable=True)  # "vxlan"
    vni: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    dns_domain: Mapped[str | None] = mapped_column(String(253), nullable=True)
    # creating | ready | deleting (an operation owns the network while not ready)
    status: Mapped[str] = mapped_column(String(20), default="ready", server_default="ready")
    # The project it belongs to (0015); the name is unique across the engine.
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True,
                                         default="default", server_default="default")
    # Shared by an admin: every project may read it and use it (not change it).
    shared: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The host serving an overlay network's gateway, DHCP and DNS (0022): sticky, moved only
    # off a fenced or removed host (services/networks.py); NULL until chosen.
    served_by: Mapped[str | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL"), nullable=True)


class Vm(Base):
    __tablename__ = "vms"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # Indexed foreign keys (0007): the engine filters VMs by host, image and network.
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), nullable=True, index=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_bytes: Mapped[int] = mapped_column(BigInteger)
    # Desired power state: "running" | "stopped" | "paused".
    desired_power: Mapped[str] = mapped_column(String(20), default="stopped")
    # Last state seen (VmState): set by operations and by the reconciler from agent reports.
    state: Mapped[str] = mapped_column(String(20), default="creating")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # cloud-init settings (api.CloudInit as JSON, plus "revision"); NULL: no seed CD-ROM.
    cloud_init: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # The pool of the root disk (shared, rbd or another dir pool); NULL: the host's storage
    # dir (vms/NAME.qcow2, the `default` pool).
    root_pool_id: Mapped[str | None] = mapped_column(ForeignKey("storage_pools.id"),
                                                     nullable=True, index=True)
    # api.Hardware as JSON (firmware, machine, boot order, CPU, graphics); NULL: its defaults.
    hardware: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The balloon's target (vm set --memory-target); NULL: all of memory_mib.
    memory_target_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # What the running domain booted with (cpus, memory_mib, balloon_mib, hardware), set when
    # it starts and by live changes: the settings that differ are pending (next boot).
    booted: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # Its affinity group (`vm create --group`): the scheduler keeps members together or apart.
    group_id: Mapped[str | None] = mapped_column(ForeignKey("vm_groups.id"), nullable=True,
                                                 index=True)
    # The host tags it requires (`vm create --host-tag`), sorted: every placement asks them.
    host_tags: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    # Snapshots corral made of it (those being made included): the project's snapshot quota
    # counts these, not the hosts' lists, so a check and its reservation are one write.
    snapshots: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The project it belongs to (0015); ``name`` is the full name: bare in default,
    # PROJECT.NAME elsewhere (engine/projects.py full_name): the domain's and disks' name too.
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True,
                                         default="default", server_default="default")
    # What `host maintenance` does with it (0019, api.EvacuationMode): auto | migrate | stop.
    evacuation: Mapped[str] = mapped_column(String(10), default="auto", server_default="auto")
    # High availability (0020, docs/ha.md): corral brings it back when it goes down unasked;
    # ha_priority orders the restarts (higher first); restart_policy (api.RestartPolicy):
    # always | on-failure (not after the guest's own power-off). ha_restarts: epoch seconds
    # of its recent restarts in place (corral.ha.restart_budget), kept here so an engine
    # restart does not reset the budget of a crash loop; ha_reason: why HA left it down,
    # NULL when it did not.
    ha: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    ha_priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    restart_policy: Mapped[str] = mapped_column(String(12), default="always",
                                                server_default="always")
    ha_restarts: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    ha_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class VmGroup(Base):
    """An affinity group: its VMs on one host (affinity) or on different hosts
    (anti-affinity); strict is a rule placement never breaks, soft only a preference."""

    __tablename__ = "vm_groups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    policy: Mapped[str] = mapped_column(String(20))  # affinity | anti-affinity
    strict: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The project it belongs to (0015); the name is unique across the engine.
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True,
                                         default="default", server_default="default")


class Nic(Base):
    """A VM's NIC on a network (idx 0: the one made with the VM); ``ip``: a static
    lease reserved in the network's DHCP server (None: a dynamic lease)."""
    __tablename__ = "nics"
    __table_args__ = (sa.UniqueConstraint("mac", name="uq_nics_mac"),
                      sa.UniqueConstraint("network_id", "ip", name="uq_nics_network_ip"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    # Lookups by network use uq_nics_network_ip (network_id leads it): no index of its own.
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"))
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idx: Mapped[int] = mapped_column(Integer, default=0)
    # attaching | ready | detaching (an operation owns the NIC while not ready)
    status: Mapped[str] = mapped_column(String(20), default="ready", server_default="ready")
    # QoS (libvirt <bandwidth> average), KiB/s; None: unlimited
    inbound_kbps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    outbound_kbps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class SecurityGroup(Base):
    """A set of allow rules (``sg_rules``) for the NICs in it (``nic_security_groups``)."""
    __tablename__ = "security_groups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The project it belongs to (0015); the name is unique across the engine.
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True,
                                         default="default", server_default="default")


class SgRule(Base):
    """One allow rule; ``cidr`` or ``remote_group_id`` (the addresses of that group's NICs)."""
    __tablename__ = "sg_rules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    sg_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id", ondelete="CASCADE"),
                                       index=True)
    direction: Mapped[str] = mapped_column(String(10))  # ingress | egress
    protocol: Mapped[str] = mapped_column(String(10))  # tcp | udp | icmp | any
    port_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cidr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_groups.id"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NicSecurityGroup(Base):
    """Membership of a NIC in a security group."""
    __tablename__ = "nic_security_groups"
    nic_id: Mapped[str] = mapped_column(ForeignKey("nics.id", ondelete="CASCADE"),
                                        primary_key=True)
    sg_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id"), primary_key=True,
                                       index=True)


class Operation(Base):
    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)  # list order
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Every lock it declared, sorted (engine/oplocks.py); taken again when it is resumed.
    locks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    project: Mapped[str | None] = mapped_column(String(63), nullable=True)
    user: Mapped[str | None] = mapped_column(String(63), nullable=True)
    location: Mapped[str | None] = mapped_column(String(63), nullable=True)  # host name
    # The engine instance (OperationRunner.id) running it or holding it pending, and until
    # when it vouches for that (renewed while it lives): another engine resumes it only once
    # the lease has run out.
    owner: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    # `operation cancel` asked on an engine that does not own it: the owner acts on it.
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class User(Base):
    """A person (or a service) who logs in: a local password (argon2id hash) and a role."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # argon2id, never returned by the API; None: no password login (API tokens only)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    role: Mapped[str] = mapped_column(String(20), default="user")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # local (a password here) | ldap (the directory's password; groups and grants are
    # refreshed at each login from the group map)
    source: Mapped[str] = mapped_column(String(10), default="local", server_default="local")
    groups: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    grants: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")


class Token(Base):
    """An API token (``kind`` api, named by its user) or a login's session token; names are
    unique per user. A token without a user is the engine's own (tests, older nodes)."""

    __tablename__ = "tokens"
    __table_args__ = (sa.UniqueConstraint("user_id", "name", name="uq_tokens_user_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    # sha256 of the secret: a stolen database does not give API access.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # the most the token may do; its user's role caps it at each request
    role: Mapped[str] = mapped_column(String(20), default="admin")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(10), default="api", server_default="api")
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The one project it may act in (None: its user's projects)
    project: Mapped[str | None] = mapped_column(String(63), nullable=True)


class JoinToken(Base):
    """A one-time token a new host joins with (`corral host token`): stored hashed."""

    __tablename__ = "join_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(63), nullable=True)


class StoragePool(Base):
    """A storage pool (dir, shared or rbd); its volumes are in ``volumes``."""

    __tablename__ = "storage_pools"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    type: Mapped[str] = mapped_column(String(10))  # dir | shared | rbd
    path: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # dir, shared
    ceph_conf: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # rbd
    ceph_pool: Mapped[str | None] = mapped_column(String(63), nullable=True)  # rbd
    # rbd: the Ceph monitors QEMU connects to, [[address, port], ...] (from `ceph mon dump`).
    monitors: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # dir: the one host holding the directory; NULL for pools every host reaches.
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), nullable=True,
                                                index=True)
    # creating | ready | deleting (an operation owns the pool while not ready)
    status: Mapped[str] = mapped_column(String(20), default="creating")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Volume(Base):
    """A volume of a pool; attached to at most one VM (``vm_id``, ``bus``, ``target``)."""

    __tablename__ = "volumes"
    # Lookups by pool use uq_volumes_pool_name (pool_id leads it): no index of its own.
    __table_args__ = (sa.UniqueConstraint("pool_id", "name", name="uq_volumes_pool_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    pool_id: Mapped[str] = mapped_column(ForeignKey("storage_pools.id"))
    name: Mapped[str] = mapped_column(String(63))
    format: Mapped[str] = mapped_column(String(10))  # qcow2 | raw
    size: Mapped[int] = mapped_column(BigInteger)  # virtual size, bytes
    # creating | ready | resizing | attaching | detaching | deleting
    status: Mapped[str] = mapped_column(String(20), default="creating")
    # Deleting a VM keeps its volumes: the database detaches them (ON DELETE SET NULL).
    vm_id: Mapped[str | None] = mapped_column(ForeignKey("vms.id", ondelete="SET NULL"),
                                              nullable=True, index=True)
    bus: Mapped[str | None] = mapped_column(String(10), nullable=True)
    target: Mapped[str | None] = mapped_column(String(8), nullable=True)  # vdb, sdc, ...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The project it belongs to (0015); the name is unique across the engine.
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True,
                                         default="default", server_default="default")


class AuditRecord(Base):
    """One audited request (mutating call, login, logout), chained to the one before by
    ``hash`` = sha256(canonical JSON of the fields + ``prev_hash``): an edited row breaks
    the chain (`corral audit verify`). ``seq`` is the chain order; no request body is kept."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(index=True)
    user: Mapped[str | None] = mapped_column(String(63), nullable=True)
    token_name: Mapped[str | None] = mapped_column(String(63), nullable=True)
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    project: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(63))  # a permission (vm.delete), login, logout
    target: Mapped[str] = mapped_column(String(255))  # the request's path
    status: Mapped[int] = mapped_column(Integer)  # HTTP status answered
    error: Mapped[str | None] = mapped_column(String(63), nullable=True)  # corral error code
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Project(Base):
    """A tenant: it owns VMs, networks, images, volumes, security groups and VM groups, and
    has quotas (``{"vms": 10, "vcpus": 16, "memory": bytes, ...}``; a missing key: none)."""

    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    quotas: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Role(Base):
    """A custom role (`corral role create`): a set of permissions. The built-in roles live
    in engine/permissions.py, not here."""

    __tablename__ = "roles"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    permissions: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoleAssignment(Base):
    """A role given to a user or a directory group on one project or on all (``*``)."""

    __tablename__ = "role_assignments"
    __table_args__ = (sa.UniqueConstraint("subject_kind", "subject", "role", "project",
                                          name="uq_role_assignments"),
                      sa.Index("ix_role_assignments_subject", "subject_kind", "subject"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subject_kind: Mapped[str] = mapped_column(String(10))  # user | group
    subject: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(63))
    project: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LdapSettings(Base):
    """The LDAP / Active Directory login configuration (`corral auth ldap set`): one row
    (id 1) or none. ``group_map`` is a list of ``{"group": DN, "role": R, "project": P}``."""

    __tablename__ = "auth_ldap"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    url: Mapped[str] = mapped_column(String(255))
    bind_dn: Mapped[str] = mapped_column(String(512))
    # sent to the directory to bind, so kept as given; never returned by the API
    bind_password: Mapped[str] = mapped_column(String(1024))
    base_dn: Mapped[str] = mapped_column(String(512))
    user_filter: Mapped[str] = mapped_column(String(512))
    group_filter: Mapped[str | None] = mapped_column(String(512), nullable=True)
    group_attribute: Mapped[str | None] = mapped_column(String(63), nullable=True)
    group_map: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    timeout_s: Mapped[float] = mapped_column(sa.Float, default=5.0, server_default="5")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClusterSetting(Base):
    """One cluster setting an admin set (`corral cluster set`); the others have their
    default (corral.engine.services.cluster_settings.SETTINGS)."""

    __tablename__ = "cluster_settings"
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class FenceMethod(Base):
    """One way to power a host off and on (`corral host fence set`): a fence agent and its
    options, tried in ``position`` order. Options that are passwords are kept apart, sealed
    (corral.engine.fencing.secrets), never answered by the API."""

    __tablename__ = "fence_methods"
    __table_args__ = (sa.UniqueConstraint("host_id", "position"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"),
                                         index=True)
    position: Mapped[int] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(80))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret_names: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
