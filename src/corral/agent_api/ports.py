"""Ports (a NIC's tap: anti-spoofing, security group rules, nftables QoS) and NIC hot-plug:
``/v1/ports/{tap}``, ``/v1/domains/{name}/nics``.

A port's body is the whole per-NIC ruleset, resolved by the engine (remote groups already
turned into addresses); the agent checks it further (corral.agent.network.firewall.parse_port:
MAC against the tap, CIDRs, port ranges), so those errors name their field.
"""

from __future__ import annotations

from pydantic import BaseModel

from corral.agent_api import Answer, Body


class _RuleFields(BaseModel):
    # One definition for the body and the answer (which differ only in extra fields' fate).
    direction: str  # ingress | egress (checked by the agent: its error names the rule)
    protocol: str = "any"  # tcp | udp | icmp | any
    port_min: int | None = None
    port_max: int | None = None
    cidrs: list[str] = ["0.0.0.0/0"]


class _PortFields(BaseModel):
    mac: str
    ips: list[str] = []  # static addresses; learned ones come from the network's leases
    ip_guard: bool = True  # check source IPs too (False: the MAC only)
    filtered: bool = False  # in a security group: the rules, then a final drop
    network: str | None = None  # whose leases and backend (nftables, or OVS flows)
    inbound_kbps: int | None = None  # QoS policed with nftables (host fact qos=nftables)
    outbound_kbps: int | None = None


class PortRuleBody(_RuleFields, Body):
    pass


class PortBody(_PortFields, Body):
    """``PUT /v1/ports/{tap}``: sets the port (idempotent)."""

    rules: list[PortRuleBody] = []


class PortSet(Answer):
    """What ``PUT /v1/ports/{tap}`` answers."""

    tap: str
    id: int  # the packet mark the agent gave the port


class PortRule(_RuleFields, Answer):
    pass


class PortInfo(_PortFields, Answer):
    """``GET /v1/ports/{tap}``: the port as the agent keeps it."""

    rules: list[PortRule] = []
    id: int = 0
    addresses: list[str] = []  # learned from DHCP (nftables sets)


class NicAttachBody(Body):
    """``POST /v1/domains/{name}/nics/attach``: the engine-designed ``<interface>``."""

    xml: str


class NicDetachBody(Body):
    mac: str


class NicPlugged(Answer):
    """What attach and detach answer: where the NIC was (un)plugged now; False where it was
    already so (both are idempotent)."""

    live: bool
    config: bool
    running: bool | None = None  # attach only: whether the domain runs


class NicInfo(Answer):
    """``GET /v1/domains/{name}/nics``."""

    mac: str | None = None
    bridge: str | None = None
    model: str | None = None
