"""API types of a VM's NICs (``corral vm nic``) and of a network's reservations."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, Field, field_validator

from corral.api.models import Name, Reservation, _Request
from corral.errors import InvalidInput
from corral.validation import validate_name

__all__ = ["NicCreate", "NicUpdate", "Reservation", "VmNic", "normalize_mac"]

# QoS limits in KiB/s (libvirt's <bandwidth> unit: kilobytes per second, 1 KiB = 1024 bytes)
MAX_KBPS = 2**32 - 1


def _groups(v: list[str] | None) -> list[str] | None:
    if v is None:
        return None
    out: list[str] = []
    for name in v:
        try:
            name = validate_name(name, "security_groups")
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        if name not in out:
            out.append(name)
    return out


def _kbps(v: int | None) -> int | None:
    if v is not None and not 1 <= v <= MAX_KBPS:
        raise ValueError(f"{v} KiB/s is not between 1 and {MAX_KBPS}")
    return v

_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# What the schema says a MAC looks like (normalize_mac also takes upper case and '-').
MAC_PATTERN = "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"


def normalize_mac(value: str) -> str:
    """``AA:bb:...`` -> ``aa:bb:...``; a unicast, locally usable MAC, else ValueError."""
    mac = value.strip().lower().replace("-", ":")
    if not _MAC_RE.fullmatch(mac):
        raise ValueError(f"MAC {value!r} is not six hex bytes like 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"MAC {value!r} is a multicast address: a NIC needs a unicast one")
    if mac == "00:00:00:00:00:00":
        raise ValueError("MAC 00:00:00:00:00:00 is not an address")
    return mac


class NicCreate(_Request):
    network: Name = Field(description="network the NIC joins")
    mac: str | None = Field(None, description="MAC address (default: a free 52:54:00:xx:xx:xx)",
                            json_schema_extra={"pattern": MAC_PATTERN})
    ip: str | None = Field(None, description="static IPv4 address: a DHCP reservation")
    security_groups: list[str] = Field([], description="security groups (none: unfiltered)")
    inbound_kbps: int | None = Field(None, description="QoS: average rate to the guest, KiB/s")
    outbound_kbps: int | None = Field(None, description="QoS: average rate from the guest, "
                                      "KiB/s")

    @field_validator("security_groups")
    @classmethod
    def _sgs(cls, v: list[str]) -> list[str]:
        return _groups(v) or []

    @field_validator("inbound_kbps", "outbound_kbps")
    @classmethod
    def _rate(cls, v: int | None) -> int | None:
        return _kbps(v)

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        try:
            return validate_name(v, "network")
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        return None if v is None else normalize_mac(v)

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return str(ipaddress.IPv4Address(v.strip()))
        except ValueError:
            raise ValueError(f"ip {v!r} is not an IPv4 address") from None


class VmNic(BaseModel):
    """A NIC of a VM; ``ip`` is its static address (reservation), ``leases`` what the
    network's DHCP server handed out to its MAC."""

    index: int
    mac: str
    network: str
    ip: str | None = None
    status: str = "ready"
    primary: bool = False
    security_groups: list[str] = []
    inbound_kbps: int | None = None
    outbound_kbps: int | None = None


class NicUpdate(_Request):
    """``PATCH /api/v1/vms/{name}/nics/{mac}``: a field left out is left as it is."""

    security_groups: list[str] | None = Field(None, description="the NIC's groups, replaced "
                                              "([]: unfiltered); applied live")

    @field_validator("security_groups")
    @classmethod
    def _sgs(cls, v: list[str] | None) -> list[str] | None:
        return _groups(v)
