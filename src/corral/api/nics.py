"""API types of a VM's NICs (``corral vm nic``) and of a network's reservations."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, Field, field_validator

from corral.api.models import Reservation, _Request
from corral.errors import InvalidInput
from corral.validation import validate_name

__all__ = ["NicCreate", "Reservation", "VmNic", "normalize_mac"]

_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


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
    network: str = Field(description="network the NIC joins")
    mac: str | None = Field(None, description="MAC address (default: a free 52:54:00:xx:xx:xx)")
    ip: str | None = Field(None, description="static IPv4 address: a DHCP reservation")

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
