"""`corral host tag ...`: labels a VM can require of its host (`vm create --host-tag`)."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.cli.output import DataDirOpt, client, handled, out

app = typer.Typer(help="Host tags: labels such as ssd or gpu that `vm create --host-tag` "
                  "requires. Lowercase a-z, 0-9, '-', '_' and '.', at most 63.",
                  no_args_is_help=True)

HostArg = typer.Argument(..., help="Host name (`corral host list`)")
TagArg = typer.Argument(..., help="Tag, e.g. ssd")


def _set(host: str, tag: str, present: bool, data_dir: Path | None) -> None:
    with handled(), client(data_dir) as c:
        tags = c.tag_host(host, tag, present).tags
        out.print(f"[green]✓[/] host {host} tags: {', '.join(tags) or 'none'}", highlight=False)


@app.command("add")
def add(host: str = HostArg, tag: str = TagArg, data_dir: Path = DataDirOpt) -> None:
    """Tag a host (a tag it has already is no error).

    Example: corral host tag add h1 ssd
    """
    _set(host, tag, True, data_dir)


@app.command("remove")
def remove(host: str = HostArg, tag: str = TagArg, data_dir: Path = DataDirOpt) -> None:
    """Take a tag off a host; the VMs on it stay where they are."""
    _set(host, tag, False, data_dir)
