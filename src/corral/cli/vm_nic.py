"""`corral vm nic add|remove|list|update`: a VM's NICs, hot-plugged into running VMs, static
IPs, security groups (changed live) and QoS."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from corral.api import NicCreate
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    WaitOpt,
    client,
    emit,
    follow,
    handled,
)
from corral.errors import InvalidInput

app = typer.Typer(help="NICs of a VM: add, remove (hot-plug when running), list.",
                  no_args_is_help=True)

NIC_COLUMNS = [
    ("#", lambda n: n.index), ("MAC", lambda n: n.mac), ("NETWORK", lambda n: n.network),
    ("IP", lambda n: n.ip or "dhcp"), ("STATUS", lambda n: n.status),
    ("GROUPS", lambda n: ",".join(n.security_groups) or "-"),
    ("IN KiB/s", lambda n: n.inbound_kbps or "-"), ("OUT KiB/s", lambda n: n.outbound_kbps or "-"),
]


@app.command("add")
def nic_add(
    vm: str = typer.Argument(..., help="VM name"),
    network: str = typer.Option(..., "--network", "-n", help="Network the NIC joins"),
    mac: str = typer.Option(None, "--mac", help="MAC address (default: a free one)"),
    ip: str = typer.Option(None, "--ip", help="Static IPv4 address (a DHCP reservation, "
                           "outside the network's dynamic range)"),
    security_group: list[str] = typer.Option(None, "--security-group", "--sg",
                                             help="Security group (repeatable); none: "
                                             "unfiltered (anti-spoofing only)"),
    inbound_kbps: int = typer.Option(None, "--inbound-kbps", help="QoS: average rate to the "
                                     "guest in KiB/s (kibibytes per second, libvirt's unit)"),
    outbound_kbps: int = typer.Option(None, "--outbound-kbps", help="QoS: average rate from "
                                      "the guest in KiB/s"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Add a NIC to a VM; a running VM gets it at once (hot-plug)."""
    with handled():
        try:
            req = NicCreate(network=network, mac=mac, ip=ip,
                            security_groups=list(security_group or []),
                            inbound_kbps=inbound_kbps, outbound_kbps=outbound_kbps)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or None
            raise InvalidInput(str(first["msg"]).removeprefix("Value error, "),
                               field=field) from None
        with client(data_dir) as c:
            follow(c, c.add_nic(vm, req.network, req.mac, req.ip,
                                security_groups=req.security_groups,
                                inbound_kbps=req.inbound_kbps, outbound_kbps=req.outbound_kbps),
                   f"add a NIC on {network} to VM {vm}", wait, output)


@app.command("remove")
def nic_remove(
    vm: str = typer.Argument(..., help="VM name"),
    mac: str = typer.Option(..., "--mac", help="MAC address of the NIC"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Remove a NIC (not the VM's first); a running guest releases it first."""
    with handled(), client(data_dir) as c:
        follow(c, c.remove_nic(vm, mac), f"remove NIC {mac} from VM {vm}", wait, output)


@app.command("list")
def nic_list(vm: str = typer.Argument(..., help="VM name"), output: OutputFormat = OutputOpt,
             data_dir: Path = DataDirOpt) -> None:
    """A VM's NICs: network, MAC and static IP of each."""
    with handled(), client(data_dir) as c:
        emit(c.list_nics(vm), output, NIC_COLUMNS)


@app.command("update")
def nic_update(
    vm: str = typer.Argument(..., help="VM name"),
    mac: str = typer.Argument(..., help="MAC address of the NIC"),
    security_group: list[str] = typer.Option(None, "--security-group", "--sg",
                                             help="The NIC's security groups (repeatable; "
                                             "replaces the current ones)"),
    no_security_groups: bool = typer.Option(False, "--no-security-groups",
                                            help="Take the NIC out of every group"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Change a NIC's security groups, live: the running guest is not restarted."""
    with handled():
        groups = list(security_group or [])
        if bool(groups) == no_security_groups:
            raise InvalidInput("give --security-group (repeatable) or --no-security-groups",
                               field="security_groups")
        with client(data_dir) as c:
            emit(c.update_nic(vm, mac, groups), output, NIC_COLUMNS)
