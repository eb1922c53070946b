"""`corral vm group ...`: affinity groups, which the scheduler keeps together or apart."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.api.scheduling import VmGroupCreate
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, build, client, emit, handled, out
from corral.errors import InvalidInput

app = typer.Typer(help="Affinity groups: VMs kept on different hosts (anti-affinity) or on "
                  "one (affinity). A VM joins one when created: `vm create --group NAME`.",
                  no_args_is_help=True)

COLUMNS = [
    ("NAME", lambda g: g.name), ("POLICY", lambda g: g.policy.value),
    ("RULE", lambda g: "strict" if g.strict else "soft"),
    ("MEMBERS", lambda g: ", ".join(g.members) or "-"),
    ("HOSTS", lambda g: "; ".join(f"{h}: {', '.join(v)}" for h, v in g.hosts.items()) or "-"),
]


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Group name: letters, digits, '-' and '_'"),
    policy: str = typer.Option(..., "--policy", metavar="anti-affinity|affinity",
                               help="anti-affinity: each member on a host of its own (a "
                               "host loss takes one); affinity: all on one host"),
    strict: bool = typer.Option(True, "--strict/--soft",
                                help="strict: a VM that cannot keep the rule is refused; "
                                "soft: the rule is kept when some host allows it"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create an affinity group.

    Example: corral vm group create web --policy anti-affinity --strict
    """
    with handled():
        if policy not in ("anti-affinity", "affinity"):
            raise InvalidInput(f"--policy is anti-affinity or affinity, not {policy!r}",
                               field="policy")
        req = build(VmGroupCreate, name=name, policy=policy, strict=strict)
        with client(data_dir) as c:
            emit(c.create_vm_group(req), output, COLUMNS)


@app.command("list")
def list_groups(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Every group: its policy, rule, members and where they run."""
    with handled(), client(data_dir) as c:
        emit(c.list_vm_groups(), output, COLUMNS)


@app.command("show")
def show(name: str = typer.Argument(..., help="Group name (`corral vm group list`)"),
         output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """One group: its policy, rule, members and the host each runs on."""
    with handled(), client(data_dir) as c:
        emit(c.get_vm_group(name), output, COLUMNS)


@app.command("delete")
def delete(name: str = typer.Argument(..., help="Group name"),
           data_dir: Path = DataDirOpt) -> None:
    """Delete a group; refused while VMs are in it (delete them first)."""
    with handled(), client(data_dir) as c:
        c.delete_vm_group(name)
        out.print(f"[green]✓[/] VM group {name} deleted")
