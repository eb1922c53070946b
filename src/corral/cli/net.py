"""`corral net ...`: networks (NAT, routed, isolated, bridged; VLAN, Open vSwitch, VXLAN)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from corral.api import NetworkBackend, NetworkCreate, NetworkMode, NetworkOverlay
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    WaitOpt,
    build,
    client,
    emit,
    follow,
    handled,
    out,
    show_one,
)
from corral.cli.sharing import share_command
from corral.errors import InvalidInput

app = typer.Typer(help="Create, list and delete networks.", no_args_is_help=True)

COLUMNS = [
    ("NAME", lambda n: n.name), ("MODE", lambda n: n.mode.value),
    ("BACKEND", lambda n: n.backend.value), ("BRIDGE", lambda n: n.bridge),
    ("VLAN", lambda n: n.vlan or "-"), ("SUBNET", lambda n: n.subnet or "-"),
    ("GATEWAY", lambda n: n.gateway or "-"),
    ("OVERLAY", lambda n: f"{n.overlay.value} {n.vni}" if n.overlay else "-"),
    ("STATUS", lambda n: n.status), ("VMS", lambda n: len(n.vms)),
]


def _dhcp_range(value: str | None) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    start, sep, end = value.partition("-")
    if not sep or not start.strip() or not end.strip():
        raise InvalidInput(f"dhcp-range {value!r} must be FIRST-LAST, e.g. "
                           "10.210.5.100-10.210.5.199", field="dhcp_range")
    return start.strip(), end.strip()


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Network name: letters, digits, '-' and '_'"),
    mode: NetworkMode = typer.Option(NetworkMode.NAT, "--mode", help="nat, routed, isolated or "
                                     "bridge (join an existing host bridge)"),
    subnet: str = typer.Option(None, "--subnet", help="IPv4 CIDR (default: a free /24 of "
                               "10.210.0.0/16)"),
    gateway: str = typer.Option(None, "--gateway", help="Gateway address (default: the first)"),
    dhcp_range: str = typer.Option(None, "--dhcp-range", help="FIRST-LAST (default: the upper "
                                   "half of the subnet)"),
    dns_domain: str = typer.Option(None, "--dns-domain", help="VM names resolve as NAME.DOMAIN "
                                   "(default: corral)"),
    vlan: int = typer.Option(None, "--vlan", help="802.1Q tag, 1-4094"),
    backend: NetworkBackend = typer.Option(NetworkBackend.LINUXBRIDGE, "--backend",
                                           help="linuxbridge or ovs (Open vSwitch)"),
    bridge: str = typer.Option(None, "--bridge", help="Bridge to build (VLAN networks may share "
                               "one) or, in bridge mode, to join"),
    overlay: NetworkOverlay = typer.Option(None, "--overlay", help="vxlan: one L2 segment "
                                           "across hosts"),
    vni: int = typer.Option(None, "--vni", help="VXLAN network identifier, 1-16777215"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create a network: a bridge with DHCP and DNS (dnsmasq) and nftables rules on every host."""
    with handled():
        start, end = _dhcp_range(dhcp_range)
        req = build(NetworkCreate, name=name, mode=mode, backend=backend, subnet=subnet, gateway=gateway,
                       dhcp_start=start, dhcp_end=end, dns_domain=dns_domain, vlan=vlan,
                       bridge=bridge, overlay=overlay, vni=vni)
        with client(data_dir) as c:
            follow(c, c.create_network(req), f"create network {name}", wait, output)


@app.command("list")
def list_networks(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """List networks."""
    with handled(), client(data_dir) as c:
        emit(c.list_networks(), output, COLUMNS)


@app.command("show")
def show(name: str, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Show one network and the VMs on it."""
    with handled(), client(data_dir) as c:
        show_one(c.get_network(name), output, 12)


app.command("share")(share_command("network", "corral net share default"))


@app.command("delete")
def delete(name: str, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
           data_dir: Path = DataDirOpt) -> None:
    """Delete a network (refused while VMs use it)."""
    with handled(), client(data_dir) as c:
        follow(c, c.delete_network(name), f"delete network {name}", wait, output)


@app.command("leases")
def leases(name: str, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The DHCP leases of a network."""
    with handled(), client(data_dir) as c:
        rows = c.leases(name)
        if output == OutputFormat.JSON:
            print(json.dumps(rows, indent=2))
            return
        for row in rows:
            out.print(f"{row['ip']:16} {row['mac']}  {row.get('hostname') or '-'}",
                      highlight=False)
