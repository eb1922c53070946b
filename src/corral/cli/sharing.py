"""`corral image share` and `corral net share`: one command, made for each kind of shared
resource."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from corral.cli.output import DataDirOpt, client, handled, out


def share_command(kind: str, example: str) -> Callable[..., None]:
    """The `share` command of ``kind`` (``image`` or ``network``, as the SDK's
    ``Client.share`` names it); ``example`` ends its help."""

    def share(name: str = typer.Argument(..., help=f"The {kind}"),
              off: bool = typer.Option(False, "--off", help="Stop sharing it"),
              data_dir: Path = DataDirOpt) -> None:
        with handled(), client(data_dir) as c:
            now = c.share(kind, name, not off)
        out.print(f"[green]✓[/] {kind} {name} " + ("shared with every project" if now
                                                  else "no longer shared"))

    share.__doc__ = f"""Share the {kind} with every project (admins): VMs of any project may use
    it; only its own project may change or delete it. `--off` stops sharing (VMs using it
    keep it).

    Example: {example}
    """
    return share
