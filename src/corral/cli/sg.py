"""`corral sg ...`: security groups, stateful per-NIC firewall rules applied live."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.api.security_groups import (
    Direction,
    Protocol,
    SecurityGroup,
    SgRuleCreate,
    parse_port_range,
)
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    build,
    client,
    emit,
    handled,
    out,
)
from corral.errors import InvalidInput

app = typer.Typer(help="Security groups: allow rules for the NICs in them (nftables on the "
                  "host); ingress denied and egress allowed by default.", no_args_is_help=True)
rule_app = typer.Typer(help="Add or remove a security group's rules.", no_args_is_help=True)
app.add_typer(rule_app, name="rule")

COLUMNS = [
    ("NAME", lambda g: g.name), ("RULES", lambda g: len(g.rules)),
    ("NICS", lambda g: len(g.nics)), ("DESCRIPTION", lambda g: g.description),
]
RULE_COLUMNS = [
    ("ID", lambda r: r.id), ("DIRECTION", lambda r: r.direction.value),
    ("PROTOCOL", lambda r: r.protocol.value),
    ("PORTS", lambda r: "-" if r.port_min is None else (
        str(r.port_min) if r.port_min == r.port_max else f"{r.port_min}-{r.port_max}")),
    ("REMOTE", lambda r: f"group {r.remote_group}" if r.remote_group else r.cidr),
]


def _show(group: SecurityGroup, output: OutputFormat) -> None:
    if output == OutputFormat.JSON:
        emit(group, output, [])
        return
    out.print(f"[bold]name[/]        {group.name}", highlight=False)
    out.print(f"[bold]description[/] {group.description}", highlight=False)
    out.print(f"[bold]nics[/]        {', '.join(group.nics) or '-'}", highlight=False)
    emit(group.rules, output, RULE_COLUMNS)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Group name: letters, digits, '-' and '_'"),
    description: str = typer.Option("", "--description", "-d", help="Free text"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create a group; it starts with one rule: egress of anything to 0.0.0.0/0."""
    with handled(), client(data_dir) as c:
        _show(c.create_security_group(name, description), output)


@app.command("list")
def list_groups(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Every security group, with its count of rules and NICs."""
    with handled(), client(data_dir) as c:
        emit(c.list_security_groups(), output, COLUMNS)


@app.command("show")
def show(name: str = typer.Argument(..., help="Group name"), output: OutputFormat = OutputOpt,
         data_dir: Path = DataDirOpt) -> None:
    """A group's rules (with their ids, for `sg rule remove`) and its NICs' MACs."""
    with handled(), client(data_dir) as c:
        _show(c.get_security_group(name), output)


@app.command("delete")
def delete(name: str = typer.Argument(..., help="Group name"),
           data_dir: Path = DataDirOpt) -> None:
    """Delete a group (refused while NICs are in it or other groups' rules name it)."""
    with handled(), client(data_dir) as c:
        c.delete_security_group(name)
        out.print(f"security group {name} deleted")


@rule_app.command("add")
def rule_add(
    group: str = typer.Argument(..., help="Group name"),
    direction: Direction = typer.Option(..., "--direction", help="ingress (to the NIC) or "
                                        "egress (from it)"),
    protocol: Protocol = typer.Option(Protocol.ANY, "--protocol", help="tcp, udp, icmp or any"),
    port: str = typer.Option(None, "--port", help="Destination port or range: 22 or "
                             "8000-8100 (tcp and udp only)"),
    cidr: str = typer.Option(None, "--cidr", help="IPv4 network of the other side (default "
                             "0.0.0.0/0)"),
    remote_group: str = typer.Option(None, "--remote-group", help="The other side is the "
                                     "NICs of this group (instead of --cidr)"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Allow traffic; applied at once to the group's NICs (running VMs are not restarted)."""
    with handled():
        low = high = None
        if port is not None:
            try:
                low, high = parse_port_range(port)
            except ValueError as exc:
                raise InvalidInput(str(exc), field="port") from None
        req = build(SgRuleCreate, direction=direction, protocol=protocol, port_min=low,
                    port_max=high, cidr=cidr, remote_group=remote_group)
        with client(data_dir) as c:
            emit(c.add_sg_rule(group, req), output, RULE_COLUMNS)


@rule_app.command("remove")
def rule_remove(group: str = typer.Argument(..., help="Group name"),
                rule_id: str = typer.Argument(..., help="Rule id (`corral sg show GROUP`)"),
                data_dir: Path = DataDirOpt) -> None:
    """Remove a rule; applied at once to the group's NICs."""
    with handled(), client(data_dir) as c:
        c.remove_sg_rule(group, rule_id)
        out.print(f"rule {rule_id} removed from security group {group}")
