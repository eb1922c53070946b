"""Per-NIC packet filtering: MAC/IP anti-spoofing and security groups, in nftables.

Every NIC corral designs has a deterministic tap name, ``cv`` + the 12 hex digits of its MAC
(:func:`tap_of`), so rules can name it before the VM runs. The engine pushes each NIC as a
*port* (``PUT /v1/ports/TAP``: MAC, static addresses, whether to check IPs, the resolved
rules of its security groups, QoS rates to police); the agent keeps each port in
``<state_dir>/TAP.json`` with a small id (1-65535), and every change re-renders both tables
from all ports and applies them in one ``nft -f -`` transaction (atomic: a NIC is never
without its rules mid-change).

    table bridge corral-sg[-HASH]            (stateless; bridge ports are the taps)
      set port_ip   ifname . ipv4_addr       the NICs' addresses: static ones (pushed) and
                                             DHCP leases (dnsmasq's --dhcp-script adds/removes
                                             them live; :func:`dhcp_script`)
      set ports, port_mac                    the ports and their MACs
      chain pre     (prerouting)             frames from a port: mark the in-port id (low 16
                                             bits of the mark) for filtered ports; anti-spoofing:
                                             ether saddr = its MAC; ARP sender MAC/IP are its
                                             own (or 0.0.0.0: probes); IPv4 saddr one of its
                                             addresses (0.0.0.0 only for DHCP to port 67);
                                             IPv6 only link-local (fe80::/10, ::), as corral's
                                             networks are IPv4; other ethertypes (VLAN tags,
                                             etc.) dropped
      chain mark_out (forward)               frames bridged to a filtered port: out-port id in
                                             the high 16 bits of the mark
      chain qos_in (postrouting)             QoS policing to a guest (``limit rate over``),
                                             where the host's kernel lacks the tc parts
                                             libvirt's ``<bandwidth>`` needs (qos_backend);
                                             from a guest: in ``pre``
    table inet corral-sg[-HASH]              (stateful; re-created whole at every apply)
      map out_by_port  mark : jump o_TAP     egress chain of the in-port
      map in_by_port   mark : jump i_TAP     ingress chain of the out-port
      map addr_in      ipv4 : jump i_TAP     ingress chain by address: traffic routed or sent
                                             from the host to a guest (no out-port mark)
      chain forward/input/output             ct established,related accept; then the maps
      chain o_TAP / i_TAP                    the rules (``return`` = allowed), then ``drop``

With br_netfilter, IPv4 frames bridged between two ports pass the ``inet`` forward hook,
but with the bridge as both interfaces: the marks set in the bridge family carry which
ports they are (the bridge family has no conntrack here; the inet family has). DHCP
(udp 68->67 out, 67->68 in) and ARP (not IP: never seen by inet hooks) are always allowed.

A port without security groups is not in the maps: only anti-spoofing applies to it.

Each node (agent state dir) has its own pair of tables (:class:`SgTables`), since an apply
replaces its tables whole: two nodes in one network namespace sharing them would wipe each
other's ports. Every table's hooks see every frame, and a frame passes only if all accept
it, so each table acts on its own ports only: ``pre`` accepts any other interface first,
the other chains name its own taps, marks or addresses. Marks are one space for the whole
namespace, hence port ids are unique across all nodes' tables (:meth:`Firewall._assign_ids`,
under :func:`_netns_lock`): an id another node also used would run our port's rules on its
traffic.
Ports of Open vSwitch networks (userspace datapath: ovs-vswitchd reads the taps before any
netfilter hook) are left out of both tables: their anti-spoofing is OpenFlow flows on the
OVS bridge (corral.agent.network.ovs_flows), and the engine refuses security groups there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from corral.agent.network import _cmd, ovs, ovs_flows
from corral.agent.specfile import written_first
from corral.domainxml import tap_of
from corral.errors import CorralError, HostError, InvalidInput, NotFound
from corral.node.paths import DEFAULT_DATA_DIR, NodePaths

log = logging.getLogger(__name__)

TABLE_PREFIX = "corral-sg"
_TABLE_RE = re.compile(r"corral-sg(-[0-9a-f]{8})?")  # any node's (SgTables.for_state_dir)
MAX_PORTS = 0xFFFF
_TAP_RE = re.compile(r"cv[0-9a-f]{12}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
PROTOCOLS = ("tcp", "udp", "icmp", "any")
_lock = threading.Lock()


@dataclass(frozen=True)
class SgTables:
    """The names of one node's two tables (nft names both by family, so they may match)."""

    bridge: str
    inet: str

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> SgTables:
        """The tables of the node whose agent state dir is ``state_dir``: ``corral-sg`` for
        the default one (hosts with one node keep their tables), else ``corral-sg-`` and 8
        hex digits of the sha256 of the resolved dir (the same from the agent, its dnsmasq
        script and purge)."""
        path = Path(state_dir).resolve()
        if path == NodePaths(DEFAULT_DATA_DIR).agent_dir.resolve():
            return cls(TABLE_PREFIX, TABLE_PREFIX)
        name = f"{TABLE_PREFIX}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
        return cls(name, name)


def is_tap(name: str) -> bool:
    """A tap corral names for a NIC (:func:`tap_of`)."""
    return bool(_TAP_RE.fullmatch(name))


def check_tap(tap: str) -> str:
    if not isinstance(tap, str) or not _TAP_RE.fullmatch(tap):
        raise InvalidInput(f"port {tap!r} is not a corral tap name (cv + 12 hex digits)",
                           field="tap")
    return tap


@dataclass(frozen=True)
class Rule:
    """An allow rule with its remote side resolved to networks (a remote group's NICs'
    addresses as /32s; an empty list matches nothing)."""

    direction: str  # ingress | egress
    protocol: str = "any"
    port_min: int | None = None
    port_max: int | None = None
    cidrs: tuple[str, ...] = ("0.0.0.0/0",)


@dataclass(frozen=True)
class Port:
    tap: str
    mac: str
    ips: tuple[str, ...] = ()  # static addresses (learned ones come from DHCP)
    ip_guard: bool = True  # check IPv4/ARP source addresses (False: MAC only)
    filtered: bool = False  # in at least one security group: rules below, default deny
    rules: tuple[Rule, ...] = ()
    network: str | None = None  # whose DHCP leases give the NIC's addresses
    inbound_kbps: int | None = None  # QoS policed here (hosts without libvirt's tc needs)
    outbound_kbps: int | None = None
    id: int = 0  # mark id, assigned by the agent


def parse_port(tap: str, body: dict[str, Any]) -> Port:
    """A validated Port from the engine's body; InvalidInput naming the field otherwise."""
    check_tap(tap)
    mac = str(body.get("mac", "")).lower()
    if not _MAC_RE.fullmatch(mac) or tap_of(mac) != tap:
        raise InvalidInput(f"mac {mac!r} is not the MAC of port {tap}", field="mac")
    ips = []
    for ip in body.get("ips", []):
        try:
            ips.append(str(ipaddress.IPv4Address(ip)))
        except ValueError:
            raise InvalidInput(f"ips: {ip!r} is not an IPv4 address", field="ips") from None
    rules = []
    for i, r in enumerate(body.get("rules", [])):
        where = f"rules[{i}]"
        if r.get("direction") not in ("ingress", "egress"):
            raise InvalidInput(f"{where}.direction must be ingress or egress",
                               field=f"{where}.direction")
        proto = r.get("protocol", "any")
        if proto not in PROTOCOLS:
            raise InvalidInput(f"{where}.protocol must be one of {', '.join(PROTOCOLS)}",
                               field=f"{where}.protocol")
        low, high = r.get("port_min"), r.get("port_max")
        if low is not None or high is not None:
            if proto not in ("tcp", "udp"):
                raise InvalidInput(f"{where}: ports need tcp or udp", field=f"{where}.port_min")
            high = low if high is None else high
            if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high <= 65535):
                raise InvalidInput(f"{where}: ports must be 1 <= port_min <= port_max <= 65535",
                                   field=f"{where}.port_min")
        cidrs = []
        for c in r.get("cidrs", ["0.0.0.0/0"]):
            try:
                cidrs.append(str(ipaddress.IPv4Network(c, strict=True)))
            except ValueError:
                raise InvalidInput(f"{where}.cidrs: {c!r} is not an IPv4 network",
                                   field=f"{where}.cidrs") from None
        rules.append(Rule(r["direction"], proto, low, high, tuple(cidrs)))
    network = body.get("network")
    if network is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", network):
        raise InvalidInput(f"network {network!r} is not a network name", field="network")
    rates: dict[str, int | None] = {}
    for name in ("inbound_kbps", "outbound_kbps"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= 2**32 - 1):
            raise InvalidInput(f"{name} must be 1 to 4294967295 KiB/s", field=name)
        rates[name] = value
    return Port(tap=tap, mac=mac, ips=tuple(ips), ip_guard=bool(body.get("ip_guard", True)),
                filtered=bool(body.get("filtered", False)), rules=tuple(rules),
                network=network, inbound_kbps=rates["inbound_kbps"],
                outbound_kbps=rates["outbound_kbps"])


def port_body(port: Port) -> dict[str, Any]:
    return {"mac": port.mac, "ips": list(port.ips), "ip_guard": port.ip_guard,
            "filtered": port.filtered, "network": port.network, "id": port.id,
            "inbound_kbps": port.inbound_kbps, "outbound_kbps": port.outbound_kbps,
            "rules": [{"direction": r.direction, "protocol": r.protocol,
                       "port_min": r.port_min, "port_max": r.port_max, "cidrs": list(r.cidrs)}
                      for r in port.rules]}


# -- rendering (pure) ------------------------------------------------------------------------

def _rule_text(rule: Rule) -> list[str]:
    """nft statements (without the verdict) of one rule; [] when it can match nothing."""
    if not rule.cidrs:
        return []
    side = "saddr" if rule.direction == "ingress" else "daddr"
    nets = sorted(rule.cidrs, key=lambda c: ipaddress.IPv4Network(c))
    if "0.0.0.0/0" in nets:
        where = "meta nfproto ipv4"
    elif len(nets) == 1:
        where = f"ip {side} {nets[0]}"
    else:
        where = f"ip {side} {{ {', '.join(nets)} }}"
    if rule.protocol == "any":
        what = ""
    elif rule.port_min is None:
        what = f" ip protocol {rule.protocol}"
    else:
        ports = (str(rule.port_min) if rule.port_min == rule.port_max
                 else f"{rule.port_min}-{rule.port_max}")
        what = f" {rule.protocol} dport {ports}"
    return [where + what]


def _port_chains(port: Port) -> list[str]:
    out = [f"  chain o_{port.tap} {{", "    udp sport 68 udp dport 67 return",
           "    meta l4proto ipv6-icmp return"]
    for rule in port.rules:
        if rule.direction == "egress":
            out += [f"    {m} return" for m in _rule_text(rule)]
    out += ["    drop", "  }", f"  chain i_{port.tap} {{", "    udp sport 67 udp dport 68 return",
            "    meta l4proto ipv6-icmp return"]
    for rule in port.rules:
        if rule.direction == "ingress":
            out += [f"    {m} return" for m in _rule_text(rule)]
    out += ["    drop", "  }"]
    return out


def _limit(kbps: int | None) -> str:
    """Policing at ``kbps`` KiB/s (nft's kbytes are 1024 bytes), with one second of burst."""
    return f"limit rate over {kbps} kbytes/second burst {kbps} kbytes"


def _elements(items: Iterable[str]) -> str:
    items = list(items)
    return f" elements = {{ {', '.join(items)} }};" if items else ""


def render(ports: list[Port], addresses: dict[str, set[str]], tables: SgTables) -> str:
    """The ``nft -f`` script that sets both ``tables`` for ``ports``.

    ``addresses``: tap -> its IPv4 addresses (static and learned) for ``addr_in``; static
    ones are also added to ``port_ip`` (learned ones are there already). The ``port_ip`` set
    keeps its elements (dnsmasq adds to it between applies); everything else is replaced.
    """
    ports = sorted(ports, key=lambda p: p.tap)
    filtered = [p for p in ports if p.filtered]
    b = f"bridge {tables.bridge}"
    lines = [
        f"add table {b}",
        f"add set {b} port_ip {{ type ifname . ipv4_addr; }}",
        f"add set {b} ports {{ type ifname; }}",
        f"add set {b} port_mac {{ type ifname . ether_addr; }}",
        f"add chain {b} pre {{ type filter hook prerouting priority -200; policy accept; }}",
        f"add chain {b} mark_out {{ type filter hook forward priority -200; policy accept; }}",
        f"add chain {b} qos_in {{ type filter hook postrouting priority 0; policy accept; }}",
        f"flush set {b} ports",
        f"flush set {b} port_mac",
        f"flush chain {b} pre",
        f"flush chain {b} mark_out",
        f"flush chain {b} qos_in",
    ]
    if ports:
        names = ", ".join(f'"{p.tap}"' for p in ports)
        lines.append(f"add element {b} ports {{ {names} }}")
        lines.append(f"add element {b} port_mac {{ "
                     + ", ".join(f'"{p.tap}" . {p.mac}' for p in ports) + " }")
    static = [f'"{p.tap}" . {ip}' for p in ports for ip in p.ips]
    if static:
        lines.append(f"add element {b} port_ip {{ {', '.join(static)} }}")
    rules = [f"add rule {b} pre iifname != @ports accept"]  # another node's, or none
    rules += [f'add rule {b} pre iifname "{p.tap}" meta mark set meta mark | {p.id:#010x}'
              for p in filtered]
    rules += [f'add rule {b} pre iifname "{p.tap}" {_limit(p.outbound_kbps)} drop'
              for p in ports if p.outbound_kbps]
    rules += [
        f"add rule {b} pre iifname . ether saddr != @port_mac drop",
        f"add rule {b} pre ether type arp iifname . arp saddr ether != @port_mac drop",
    ]
    unguarded = [f'"{p.tap}"' for p in ports if not p.ip_guard]
    if unguarded:
        rules.append(f"add rule {b} pre iifname {{ {', '.join(unguarded)} }} "
                     "ether type { ip, arp, ip6 } accept")
    rules += [
        f"add rule {b} pre ether type arp arp saddr ip 0.0.0.0 accept",
        f"add rule {b} pre ether type arp iifname . arp saddr ip != @port_ip drop",
        f"add rule {b} pre ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
        f"add rule {b} pre ether type ip iifname . ip saddr != @port_ip drop",
        f"add rule {b} pre ether type ip6 ip6 saddr != {{ ::, fe80::/10 }} drop",
        f"add rule {b} pre ether type {{ ip, arp, ip6 }} accept",
        f"add rule {b} pre drop",
    ]
    rules += [f'add rule {b} mark_out oifname "{p.tap}" meta mark set meta mark | '
              f"{p.id << 16:#010x}" for p in filtered]
    # frames to a guest, bridged or from the host, all leave through bridge postrouting
    rules += [f'add rule {b} qos_in oifname "{p.tap}" {_limit(p.inbound_kbps)} drop'
              for p in ports if p.inbound_kbps]
    lines += rules
    by_addr = sorted({(ip, p.tap) for p in filtered for ip in addresses.get(p.tap, set())},
                     key=lambda x: ipaddress.IPv4Address(x[0]))
    seen: set[str] = set()
    addr_items = []
    for ip, tap in by_addr:  # an address belongs to one NIC; the first wins if two claim it
        if ip not in seen:
            seen.add(ip)
            addr_items.append(f"{ip} : jump i_{tap}")
    inet = [
        f"add table inet {tables.inet}",
        f"delete table inet {tables.inet}",
        f"table inet {tables.inet} {{",
    ]
    for p in filtered:
        inet += _port_chains(p)
    inet += [
        "  map out_by_port { type mark : verdict;"
        + _elements(f"{p.id:#x} : jump o_{p.tap}" for p in filtered) + " }",
        "  map in_by_port { type mark : verdict;"
        + _elements(f"{p.id:#x} : jump i_{p.tap}" for p in filtered) + " }",
        "  map addr_in { type ipv4_addr : verdict;" + _elements(addr_items) + " }",
        "  chain forward {",
        "    type filter hook forward priority -10; policy accept;",
        "    ct state established,related accept",
        "    meta mark & 0x0000ffff vmap @out_by_port",
        "    meta mark >> 16 vmap @in_by_port",
        "    meta mark & 0xffff0000 == 0 ip daddr vmap @addr_in",
        "  }",
        "  chain input {",
        "    type filter hook input priority -10; policy accept;",
        "    ct state established,related accept",
        "    meta mark & 0x0000ffff vmap @out_by_port",
        "  }",
        "  chain output {",
        "    type filter hook output priority -10; policy accept;",
        "    ct state established,related accept",
        "    ip daddr vmap @addr_in",
        "  }",
        "}",
    ]
    return "\n".join(lines + inet) + "\n"


_qos: str | None = None


def qos_backend() -> str:
    """How this host limits a NIC's bandwidth: ``libvirt`` (``<bandwidth>``: tc's htb and sfq
    qdiscs for inbound, the ``police`` action for outbound) when the kernel has them,
    else ``nftables`` (``limit rate over`` on the tap: policing, frames above the rate are
    dropped). Probed once, in a private network namespace (``unshare -n``)."""
    global _qos
    if _qos is None:
        probe = ("tc qdisc add dev lo root handle 1: htb default 1 && "
                 "tc qdisc del dev lo root && tc qdisc add dev lo root handle 1: sfq && "
                 "tc qdisc add dev lo ingress && tc filter add dev lo parent ffff: protocol "
                 "all u32 match u32 0 0 police rate 8kbit burst 10k drop flowid :1")
        try:
            proc = _cmd.run(["unshare", "-n", "sh", "-c", probe], check=False, timeout=10)
            _qos = "libvirt" if proc.returncode == 0 else "nftables"
        except CorralError:  # no unshare or tc: libvirt reports its own error if it fails
            _qos = "libvirt"
    return _qos


@dataclass(frozen=True)
class OvsTools:
    """What the DHCP script needs to change a port's flows on Open vSwitch."""

    vsctl: str
    ofctl: str
    flock: str
    rundir: str  # OVS_RUNDIR: db.sock, BRIDGE.mgmt, the flows lock


_SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9_./+@:,=-]*")


def _ovs_part(tools: OvsTools) -> str:
    """Lines of the DHCP script for ports on OVS bridges: the ip/arp flows of the leased
    address (ovs_flows.address_flows), added or deleted under the agent's flows lock."""
    run = tools.rundir
    head = f"cookie=$c,priority={ovs_flows.ALLOW},in_port=$tap,dl_src=$m"
    return f"""tap=cv$mac
[ -S {run}/db.sock ] || exit 0
br=$({tools.vsctl} --db=unix:{run}/db.sock --timeout=5 port-to-br "$tap" 2>/dev/null) || exit 0
case "$br" in ""|*[!A-Za-z0-9_.-]*) exit 0 ;; esac
c=0x{ovs_flows.COOKIE_PREFIX:04x}$mac
m=$(printf '%s' "$mac" | sed 's/../&:/g; s/:$//')
(
  {tools.flock} -w 10 9 || exit 0
  if [ "$verb" = add ]; then
    printf '%s\\n' "{head},ip,nw_src=$3,actions=NORMAL" \\
      "{head},arp,arp_sha=$m,arp_spa=$3,actions=NORMAL" |
      {tools.ofctl} add-flows "unix:{run}/$br.mgmt" - 2>/dev/null
  else
    {tools.ofctl} del-flows "unix:{run}/$br.mgmt" "cookie=$c/-1,ip,nw_src=$3" 2>/dev/null
    {tools.ofctl} del-flows "unix:{run}/$br.mgmt" "cookie=$c/-1,arp,arp_spa=$3" 2>/dev/null
  fi
) 9>>{run}/{ovs_flows.LOCK_NAME}
"""


def dhcp_script(nft: str, tables: SgTables, ovs_tools: OvsTools | None = None) -> str:
    """dnsmasq's ``--dhcp-script`` (run as root with add|old|del MAC IP [NAME]): keeps the
    learned address of a lease in ``port_ip`` and ``addr_in`` of the node's ``tables``
    (its networks' leases are its ports' addresses), and, for a tap on an Open
    vSwitch bridge, in its flows (``ovs_tools``). Arguments are checked to be a MAC and a
    dotted quad (not 0.0.0.0) before they reach nft or ovs-ofctl; failures (no such chain,
    no such port) are ignored."""
    ovs_part = _ovs_part(ovs_tools) if ovs_tools else ""
    return f"""#!/bin/sh
# corral: generated. dnsmasq runs this on every DHCP lease change (add|old|del MAC IP).
case "$1" in add|old) verb=add ;; del) verb=delete ;; *) exit 0 ;; esac
mac=$(printf '%s' "$2" | tr -d :)
case "$mac" in ""|*[!0-9a-f]*) exit 0 ;; esac
[ ${{#mac}} -eq 12 ] || exit 0
case "$3" in ""|*[!0-9.]*|0.0.0.0) exit 0 ;; esac
{nft} "$verb" element bridge {tables.bridge} port_ip "{{ \\"cv$mac\\" . $3 }}" 2>/dev/null
{nft} "$verb" element inet {tables.inet} addr_in "{{ $3 : jump i_cv$mac }}" 2>/dev/null
{ovs_part}exit 0
"""


def _ovs_tools() -> OvsTools | None:
    """The OVS tools of this host, or None (not installed, or a run dir unfit for a script)."""
    rundir = str(ovs.OvsPaths.from_env().rundir)
    if not _SAFE_PATH_RE.fullmatch(rundir):
        log.warning("OVS run dir %r is not written into the DHCP script: leased addresses "
                    "of OVS ports are learned at the next port sync only", rundir)
        return None
    try:
        return OvsTools(_cmd.which("ovs-vsctl"), _cmd.which("ovs-ofctl"), _cmd.which("flock"),
                        rundir)
    except CorralError:
        return None


def write_dhcp_script(path: Path, tables: SgTables) -> None:
    """Write the script (mode 0755) when missing or different."""
    text = dhcp_script(_cmd.which("nft"), tables, _ovs_tools())
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)


# -- applying --------------------------------------------------------------------------------

def learned(tables: SgTables) -> set[tuple[str, str]]:
    """(tap, ip) elements of the node's ``port_ip`` now (static and learned)."""
    proc = _cmd.run(["nft", "-j", "list", "set", "bridge", tables.bridge, "port_ip"],
                    check=False)
    if proc.returncode != 0:
        return set()
    out = set()
    try:
        for item in json.loads(proc.stdout).get("nftables", []):
            for elem in item.get("set", {}).get("elem", []):
                concat = elem.get("concat") if isinstance(elem, dict) else None
                if isinstance(concat, list) and len(concat) == 2:
                    out.add((str(concat[0]), str(concat[1])))
    except (ValueError, AttributeError) as exc:
        raise HostError("nft printed a set that is not JSON") from exc
    return out


def foreign_ids(tables: SgTables) -> set[int]:
    """Port ids (marks) in the ``out_by_port`` maps of the other nodes' inet tables here."""
    proc = _cmd.run(["nft", "-j", "list", "tables", "inet"], check=False)
    if proc.returncode != 0:
        return set()
    try:
        names = {item["table"].get("name") for item in json.loads(proc.stdout)["nftables"]
                 if isinstance(item, dict) and isinstance(item.get("table"), dict)}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HostError("nft printed tables that are not JSON") from exc
    out: set[int] = set()
    for name in sorted(n for n in names
                       if isinstance(n, str) and _TABLE_RE.fullmatch(n) and n != tables.inet):
        proc = _cmd.run(["nft", "-j", "list", "map", "inet", name, "out_by_port"], check=False)
        if proc.returncode != 0:  # gone meanwhile, or re-created by its agent right now
            continue
        try:
            for item in json.loads(proc.stdout).get("nftables", []):
                for elem in item.get("map", {}).get("elem", []):
                    if isinstance(elem, list) and elem and isinstance(elem[0], int):
                        out.add(elem[0])
        except (ValueError, AttributeError) as exc:
            raise HostError("nft printed a map that is not JSON") from exc
    return out


NETNS_LOCK = "corral-sg.lock"


@contextlib.contextmanager
def _netns_lock(name: str = NETNS_LOCK, timeout: float = 30.0) -> Iterator[None]:
    """Held by one agent of this network namespace at a time (choosing ids, applying). An
    abstract unix socket: its scope is the network namespace, as the tables', and it is
    released when its holder dies."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.bind("\0" + name)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise HostError(f"cannot take the nftables lock {name!r}: {exc}") from exc
                if time.monotonic() > deadline:
                    raise HostError(f"another corral agent held the nftables lock {name!r} "
                                    f"for over {timeout:g} s") from exc
                time.sleep(0.02)
        yield
    finally:
        sock.close()


def _enable_br_netfilter() -> None:
    """Bridged IPv4 must pass the inet hooks (br_netfilter) for security groups to see it."""
    path = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    try:
        if path.read_text().strip() != "1":
            path.write_text("1\n")
    except OSError as exc:
        raise HostError(f"br_netfilter is not available ({path}: {exc}): security groups "
                        "need bridged traffic to pass nftables' inet hooks") from exc


class Firewall:
    """The ports of this host, kept in ``state_dir`` and applied as one ruleset."""

    def __init__(self, state_dir: Path,
                 leases: Callable[[str], list[tuple[str, str]]] | None = None,
                 on_ovs: Callable[[str], bool] | None = None,
                 tables: SgTables | None = None) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        # state_dir is <agent state dir>/ports: the node is its agent state dir
        self.tables = tables or SgTables.for_state_dir(state_dir.parent)
        self._leases = leases  # network name -> [(mac, ip)] of its DHCP server here
        self._on_ovs = on_ovs  # network name -> is it an Open vSwitch network here

    def _ovs(self, port: Port) -> bool:
        """Whether the port's network is an OVS one (OpenFlow flows instead of nftables)."""
        if self._on_ovs is None or not port.network:
            return False
        try:
            return self._on_ovs(port.network)
        except CorralError:
            return False

    def _file(self, tap: str) -> Path:
        return self.dir / f"{check_tap(tap)}.json"

    def ports(self) -> list[Port]:
        out = []
        for path in sorted(self.dir.glob("cv*.json")):
            try:
                body = json.loads(path.read_text())
                port = parse_port(path.stem, body)
                out.append(replace(port, id=int(body.get("id", 0))))
            except (ValueError, OSError, InvalidInput) as exc:
                log.error("port file %s is unreadable, ignored: %s", path, exc)
        return out

    def _addresses(self, ports: list[Port]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {p.tap: set(p.ips) for p in ports}
        known = {p.tap for p in ports}
        for tap, ip in learned(self.tables):
            if tap in known:
                out[tap].add(ip)
        if self._leases is not None:
            for net in {p.network for p in ports if p.network}:
                try:
                    for mac, ip in self._leases(net):
                        tap = tap_of(mac)
                        if tap in known:
                            out[tap].add(ip)
                except Exception as exc:
                    log.warning("leases of network %s unreadable: %s", net, exc)
        return out

    def _apply(self, ports: list[Port]) -> None:
        ports = [p for p in ports if not self._ovs(p)]
        if any(p.filtered for p in ports):
            _enable_br_netfilter()
        addresses = self._addresses(ports)
        # learned leases go into port_ip too (the dnsmasq script may have missed them while
        # the table did not exist yet, e.g. at host boot)
        with_learned = [replace(p, ips=tuple(sorted(addresses[p.tap])))
                        if p.ip_guard else p for p in ports]
        _cmd.run(["nft", "-f", "-"], input=render(with_learned, addresses, self.tables))

    def _assign_ids(self, ports: list[Port]) -> list[Port]:
        """``ports`` with ids unique in this network namespace: a port keeps its id unless
        it has none (0) or another node's table uses it (ports of two nodes that chose
        ids alone, e.g. both restored at boot: the later apply moves its own)."""
        taken = foreign_ids(self.tables)
        kept, moved = [], []
        for p in sorted(ports, key=lambda p: p.tap):
            if 0 < p.id <= MAX_PORTS and p.id not in taken:
                taken.add(p.id)
                kept.append(p)
            else:
                moved.append(p)
        free = iter(i for i in range(1, MAX_PORTS + 1) if i not in taken)
        for p in moved:
            pid = next(free, 0)
            if not pid:
                raise HostError(f"more than {MAX_PORTS} ports on this host")
            kept.append(replace(p, id=pid))
        return kept

    def _save_moved(self, before: list[Port], after: list[Port], skip: str = "") -> None:
        """Rewrite the files of ports whose id _assign_ids changed (once applied)."""
        old = {p.tap: p.id for p in before}
        for p in after:
            if p.tap != skip and old.get(p.tap) != p.id:
                self._file(p.tap).write_text(json.dumps(port_body(p)))

    def apply(self, port: Port) -> Port:
        """Add or replace one port and apply every port (idempotent)."""
        with _lock, _netns_lock():
            current = {p.tap: p for p in self.ports()}
            old = current.get(port.tap)
            current[port.tap] = replace(port, id=old.id if old else 0)
            ports = self._assign_ids(list(current.values()))
            port = next(p for p in ports if p.tap == port.tap)
            with written_first(self._file(port.tap), json.dumps(port_body(port))):
                self._apply(ports)
                if self._ovs(port):
                    self._sync_ovs(ports, strict=True)
            self._save_moved(list(current.values()), ports, skip=port.tap)
            if old is not None and old.ip_guard:
                self._forget_addresses(port.tap, keep=set(port.ips) | self._leased(port))
            return port

    def _leased(self, port: Port) -> set[str]:
        if self._leases is None or not port.network:
            return set()
        try:
            return {ip for mac, ip in self._leases(port.network) if mac.lower() == port.mac}
        except Exception:
            return set()

    def _forget_addresses(self, tap: str, keep: set[str] | None = None) -> None:
        stale = [(t, ip) for t, ip in learned(self.tables)
                 if t == tap and ip not in (keep or set())]
        if stale:
            items = ", ".join(f'"{t}" . {ip}' for t, ip in stale)
            _cmd.run(["nft", "-f", "-"],
                     input=f"delete element bridge {self.tables.bridge} port_ip {{ {items} }}\n",
                     check=False)

    def remove(self, tap: str) -> bool:
        """Forget a port and its rules; False when there was none (idempotent)."""
        with _lock, _netns_lock():
            path = self._file(tap)
            if not path.exists():
                return False
            before = [p for p in self.ports() if p.tap != tap]
            rest = self._assign_ids(before)
            path.unlink()
            self._apply(rest)
            self._save_moved(before, rest)
            self._forget_addresses(tap)
            try:
                ovs_flows.remove(tap[2:])
            except CorralError as exc:  # its flows go at the next sync
                log.error("Open vSwitch flows of port %s could not be removed: %s", tap, exc)
            return True

    def get(self, tap: str) -> dict[str, Any]:
        path = self._file(tap)
        if not path.exists():
            raise NotFound(f"port {tap} is not set up on this host")
        body: dict[str, Any] = json.loads(path.read_text())
        body["addresses"] = sorted(ip for t, ip in learned(self.tables) if t == tap)
        return body

    def restore(self) -> None:
        """Re-apply every port (agent start, host boot); errors are logged."""
        with _lock:
            ports = self.ports()
            if ports:
                try:
                    with _netns_lock():
                        ids = self._assign_ids(ports)
                        self._apply(ids)
                        self._save_moved(ports, ids)
                        ports = ids
                except Exception as exc:
                    log.error("ports could not be restored: %s", exc)
            self._sync_ovs(ports)  # also drops flows of ports forgotten meanwhile

    # -- Open vSwitch ports: OpenFlow flows (corral.agent.network.ovs_flows) ------------------

    def _ovs_addresses(self, ports: list[Port]) -> dict[str, set[str]]:
        """Static and leased addresses of OVS ports (ip-guarded ones)."""
        out: dict[str, set[str]] = {p.tap: set(p.ips) for p in ports}
        for port in ports:
            if port.ip_guard:
                out[port.tap] |= self._leased(port)
        return out

    def _sync_ovs(self, ports: list[Port], strict: bool = False) -> None:
        ours = [p for p in ports if self._ovs(p)]
        try:
            ovs_flows.sync(ours, lambda: self._ovs_addresses(ours))
        except CorralError as exc:
            if strict:
                raise
            log.error("Open vSwitch flows of ports could not be synced: %s", exc)

    def sync_ovs(self) -> None:
        """Install the flows of every OVS port whose tap exists now and drop those of ports
        whose tap is gone (after a domain start or NIC hot-plug; errors are logged)."""
        with _lock:
            self._sync_ovs(self.ports())
