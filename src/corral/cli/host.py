"""`corral host ...`: the hosts VMs run on, and their settings (KSM)."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.api.hosts import HostPatch
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
    show_one,
)
from corral.errors import InvalidInput

app = typer.Typer(help="The hosts VMs run on: list them, show one, change its settings.",
                  no_args_is_help=True)

COLUMNS = [
    ("NAME", lambda h: h.name), ("STATUS", lambda h: h.status),
    ("VIRT", lambda h: h.virt_type or "-"), ("CPUS", lambda h: h.cpus or "-"),
    ("MEMORY", lambda h: f"{h.memory_mib} MiB" if h.memory_mib else "-"),
    ("URL", lambda h: h.url),
]


@app.command("list")
def list_hosts(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Every host: status, KVM or TCG, CPUs and memory."""
    with handled(), client(data_dir) as c:
        emit(c.list_hosts(), output, COLUMNS)


@app.command("show")
def show(name: str = typer.Argument(..., help="Host name (`corral host list`)"),
         output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """One host: its facts, and its memory now (KSM on or off and what it spares, the memory
    running VMs booted with and what their balloons leave them)."""
    with handled(), client(data_dir) as c:
        show_one(c.get_host(name), output)


@app.command("set")
def set_host(
    name: str = typer.Argument(..., help="Host name (`corral host list`)"),
    ksm: str = typer.Option(None, "--ksm", help="on: the kernel merges identical memory "
                            "pages of VMs (more VMs fit: memory overcommit, some CPU spent "
                            "scanning); off: merged pages are split again"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Change a host's settings.

    Example: corral host set h1 --ksm on
    """
    with handled():
        if ksm is None:
            raise InvalidInput("nothing to change: give an option (see --help)")
        if ksm not in ("on", "off"):
            raise InvalidInput(f"--ksm is on or off, not {ksm!r}", field="ksm")
        req = build(HostPatch, ksm=ksm == "on")
        with client(data_dir) as c:
            follow(c, c.update_host(name, req), f"KSM {ksm} on host {name}", wait, output)
