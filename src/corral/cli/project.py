"""`corral project ...`: projects, their quotas, and the project the CLI acts in."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from corral.api.projects import ProjectCreate, ProjectInfo, QuotaSet
from corral.cli import output
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    build,
    client,
    emit,
    handled,
    human_bytes,
    out,
)
from corral.client import sessions
from corral.errors import Forbidden, InvalidInput
from corral.validation import parse_size

app = typer.Typer(help="Projects: each owns its VMs, volumes, networks, images and security "
                  "groups, has quotas, and names VMs apart from the other projects'. Every "
                  "command acts in one: `corral --project web vm list`, or `corral project "
                  "switch web` for the ones after.", no_args_is_help=True)
quota_app = typer.Typer(help="A project's limits: `corral project quota set web --vcpus 16 "
                        "--memory 32G` (`corral project show web` shows them against use).",
                        no_args_is_help=True)
app.add_typer(quota_app, name="quota")

DEFAULT = "default"
_BYTES = {"memory", "disk"}
_LIMIT = 1 << 62
_ZERO = re.compile(r"0+[KMGTkmgt]?(i?B)?")


def _limit(value: int | None, quota: str) -> str:
    if value is None:
        return "-"
    return human_bytes(value) if quota in _BYTES else str(value)


def _columns(current: str) -> list[tuple[str, Any]]:
    return [("", lambda p: "*" if p.name == current else ""), ("NAME", lambda p: p.name),
            ("VMS", lambda p: f"{p.usage.get('vms', 0)}/{_limit(p.quotas.get('vms'), 'vms')}"),
            ("VCPUS", lambda p: f"{p.usage.get('vcpus', 0)}/"
                                f"{_limit(p.quotas.get('vcpus'), 'vcpus')}"),
            ("MEMORY", lambda p: f"{human_bytes(p.usage.get('memory', 0))}/"
                                 f"{_limit(p.quotas.get('memory'), 'memory')}"),
            ("DESCRIPTION", lambda p: p.description)]


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Project name: letters, digits, '-', '_'"),
    description: str = typer.Option("", "--description", "-d", help="What it is for"),
    output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create an empty project (no limits: `corral project quota set` adds them).

    Examples: corral project create web --description "the shop"
              corral role assign alice user --project web
              corral project switch web
    """
    with handled():
        req = build(ProjectCreate, name=name, description=description)
        with client(data_dir) as c:
            made = c.create_project(req)
            if output_fmt == OutputFormat.JSON:
                emit(made, output_fmt, [])
            else:
                out.print(f"[green]✓[/] project {made.name} created")


@app.command("list")
def list_projects(output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The projects you see (used/limit); * marks the one this CLI acts in."""
    with handled(), client(data_dir) as c:
        emit(c.list_projects(), output_fmt, _columns(c.project or DEFAULT))


@app.command("show")
def show(name: str = typer.Argument(..., help="Project name"),
         output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """A project's limits against its use, and what it owns."""
    with handled(), client(data_dir) as c:
        p = c.get_project(name)
    if output_fmt == OutputFormat.JSON:
        emit(p, output_fmt, [])
        return
    _show(p)


def _show(p: ProjectInfo) -> None:
    out.print(f"[bold]{p.name}[/]  {p.description}".rstrip(), highlight=False)
    table = Table(box=None, header_style="bold")
    for title in ("QUOTA", "USED", "LIMIT", "FREE"):
        table.add_column(title)
    for quota, limit in p.quotas.items():
        used = p.usage.get(quota, 0)
        free = "-" if limit is None else _limit(max(limit - used, 0), quota)
        table.add_row(quota, _limit(used, quota), _limit(limit, quota), free)
    out.print(table)
    holds = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in p.holds.items() if n)
    out.print(f"holds: {holds or 'nothing'}", highlight=False)


@app.command("delete")
def delete(name: str = typer.Argument(..., help="Project name"),
           data_dir: Path = DataDirOpt) -> None:
    """Delete an empty project and the role assignments on it.

    Refused while it owns anything (the error names what), and for `default`."""
    with handled(), client(data_dir) as c:
        c.delete_project(name)
        out.print(f"[green]✓[/] project {name} deleted")


@app.command("switch")
def switch(name: str = typer.Argument(..., help="Project name (`default`: back to it)"),
           data_dir: Path = DataDirOpt) -> None:
    """Make the CLI act in this project from now on; --project beats it for one command.

    Kept next to the token, in the current remote's config.

    Examples: corral project switch web     (then `corral vm list` lists web's VMs)
              corral project switch default
    """
    with handled():
        if name != DEFAULT:
            # 404 for one that is not there (or not yours); roles without project.read
            # still act in theirs: nothing to check then
            with client(data_dir) as c, contextlib.suppress(Forbidden):
                c.get_project(name)
        where = sessions.store_project(None if name == DEFAULT else name,
                                       remote=output.selected_remote,
                                       data_dir=None if output.selected_remote else data_dir)
        out.print(f"[green]✓[/] now in project {name} (kept in {where})", highlight=False)


# -- quotas -----------------------------------------------------------------------------------

def _count(value: str, quota: str) -> int | None:
    if value.strip().lower() == "none":
        return None
    if not value.strip().isdigit():
        raise InvalidInput(f"--{quota.replace('_', '-')} {value!r}: a number >= 0, or none to "
                           "clear the limit", field=quota)
    return int(value)


def _size(value: str, quota: str) -> int | None:
    text = value.strip()
    if text.lower() == "none":
        return None
    if _ZERO.fullmatch(text):  # 0, 0G: nothing may use any (parse_size wants 1 or more)
        return 0
    return parse_size(text, quota, most=_LIMIT)


@quota_app.command("set")
def quota_set(
    name: str = typer.Argument(..., help="Project name"),
    vms: str | None = typer.Option(None, "--vms", metavar="N", help="VMs (none: no limit)"),
    vcpus: str | None = typer.Option(None, "--vcpus", metavar="N", help="vCPUs of its VMs"),
    memory: str | None = typer.Option(None, "--memory", metavar="SIZE",
                                      help="Memory of its VMs, e.g. 32G (a bare number: MiB)"),
    disk: str | None = typer.Option(None, "--disk", metavar="SIZE",
                                    help="Root disks and volumes, e.g. 500G"),
    volumes: str | None = typer.Option(None, "--volumes", metavar="N", help="Volumes"),
    networks: str | None = typer.Option(None, "--networks", metavar="N", help="Networks"),
    security_groups: str | None = typer.Option(None, "--security-groups", metavar="N",
                                               help="Security groups"),
    snapshots: str | None = typer.Option(None, "--snapshots", metavar="N",
                                         help="Snapshots of its VMs"),
    output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Set a project's limits; `none` clears one, those not named stay. A limit below the
    current use refuses more and takes nothing away.

    Examples: corral project quota set web --vcpus 16 --memory 32G --vms 10
              corral project quota set web --disk 500G --volumes none
    """
    with handled():
        given: dict[str, int | None] = {}
        for quota, value in (("vms", vms), ("vcpus", vcpus), ("volumes", volumes),
                             ("networks", networks), ("security_groups", security_groups),
                             ("snapshots", snapshots)):
            if value is not None:
                given[quota] = _count(value, quota)
        for quota, value in (("memory", memory), ("disk", disk)):
            if value is not None:
                given[quota] = _size(value, quota)
        if not given:
            raise InvalidInput("name a limit to set, e.g. --vcpus 16 (`corral project quota "
                               "set --help`)", field="quotas")
        req = build(QuotaSet, **given)
        with client(data_dir) as c:
            p = c.set_quotas(name, req)
        if output_fmt == OutputFormat.JSON:
            print(json.dumps(p.model_dump(mode="json"), indent=2))
        else:
            _show(p)
