"""Database tables of the engine. Desired state lives here; actual state is what agents report."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    url: Mapped[str] = mapped_column(String(255))
    token: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(20), default="up")
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_seen: Mapped[datetime | None] = mapped_column(nullable=True)


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


class Network(Base):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    bridge: Mapped[str] = mapped_column(String(15), unique=True)
    subnet: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))
    dhcp_start: Mapped[str] = mapped_column(String(64))
    dhcp_end: Mapped[str] = mapped_column(String(64))
    nat: Mapped[bool] = mapped_column(default=True)


class Vm(Base):
    __tablename__ = "vms"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), nullable=True)
    network_id: Mapped[str | None] = mapped_column(ForeignKey("networks.id"), nullable=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_bytes: Mapped[int] = mapped_column(BigInteger)
    mac: Mapped[str | None] = mapped_column(String(17), unique=True, nullable=True)
    # Desired power state: "running" | "stopped" | "paused".
    desired_power: Mapped[str] = mapped_column(String(20), default="stopped")
    # Last state seen (VmState): set by operations and by the reconciler from agent reports.
    state: Mapped[str] = mapped_column(String(20), default="creating")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # sha256 of the secret: a stolen database does not give API access.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="admin")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
