"""API types of security groups (``corral sg``): stateful per-NIC firewall rules.

A rule allows traffic in one direction (``ingress``: to the NIC, ``egress``: from it) for a
protocol (``tcp``, ``udp``, ``icmp`` or ``any``), optionally a destination port range (tcp and
udp only), from/to a CIDR or the current addresses of another group's NICs.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator, model_validator

from corral.api.models import Name, _Request
from corral.errors import InvalidInput
from corral.validation import validate_name

__all__ = [
    "Direction", "Protocol", "SecurityGroup", "SecurityGroupCreate", "SgRule", "SgRuleCreate",
    "parse_port_range",
]

_PORTS_RE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


class Direction(StrEnum):
    INGRESS = "ingress"
    EGRESS = "egress"


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    ANY = "any"


def _name(value: str, field: str) -> str:
    try:
        return validate_name(value, field)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def parse_port_range(value: str) -> tuple[int, int]:
    """``"22"`` -> (22, 22), ``"8000-8100"`` -> (8000, 8100); ValueError otherwise."""
    m = _PORTS_RE.fullmatch(value.strip())
    if not m:
        raise ValueError(f"port {value!r} is not a port (22) or a range (8000-8100)")
    low = int(m.group(1))
    high = int(m.group(2)) if m.group(2) else low
    return low, high


class SecurityGroupCreate(_Request):
    name: Name = Field(description="group name (1-63 letters, digits, '-', '_')")
    description: str = Field("", max_length=255, description="free text")

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _name(v, "name")


class SgRuleCreate(_Request):
    direction: Direction
    protocol: Protocol = Protocol.ANY
    port_min: int | None = Field(None, description="first destination port (tcp/udp)")
    port_max: int | None = Field(None, description="last destination port (default: port_min)")
    cidr: str | None = Field(None, description="IPv4 network (default 0.0.0.0/0 unless "
                             "remote_group is given)")
    remote_group: str | None = Field(None, description="another group: its NICs' addresses")

    @field_validator("port_min", "port_max")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 65535:
            raise ValueError(f"port {v} is not between 1 and 65535")
        return v

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return str(ipaddress.IPv4Network(v.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"cidr {v!r} is not an IPv4 network with its host bits zero "
                             f"(like 10.0.0.0/8): {exc}") from None

    @field_validator("remote_group")
    @classmethod
    def _remote(cls, v: str | None) -> str | None:
        return None if v is None else _name(v, "remote_group")

    @model_validator(mode="after")
    def _together(self) -> SgRuleCreate:
        if self.port_max is not None and self.port_min is None:
            raise InvalidInput("port_max needs port_min", field="port_min")
        if self.port_min is not None:
            if self.protocol not in (Protocol.TCP, Protocol.UDP):
                raise InvalidInput(f"ports apply to tcp and udp only, not {self.protocol}",
                                   field="port_min")
            if self.port_max is None:
                self.port_max = self.port_min
            elif self.port_max < self.port_min:
                raise InvalidInput(f"port range {self.port_min}-{self.port_max} is reversed",
                                   field="port_max")
        if self.cidr is not None and self.remote_group is not None:
            raise InvalidInput("give cidr or remote_group, not both", field="cidr")
        if self.cidr is None and self.remote_group is None:
            self.cidr = "0.0.0.0/0"
        return self


class SgRule(BaseModel):
    id: str
    direction: Direction
    protocol: Protocol
    port_min: int | None = None
    port_max: int | None = None
    cidr: str | None = None
    remote_group: str | None = None


class SecurityGroup(BaseModel):
    name: str
    project: str = Field("default", description="The project it belongs to")
    description: str = ""
    rules: list[SgRule] = []
    nics: list[str] = Field([], description="MACs of the NICs in the group")
