"""The `corral` command: `corral --help` lists everything."""

from __future__ import annotations

import typer

from corral.cli import image, node, vm

app = typer.Typer(
    help="corral: virtual machines on your own hosts.\n\n"
    "Start with `corral up --detach`, then `corral image build-tiny` and "
    "`corral vm create demo --image tiny --start`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("up")(node.up)
app.command("down")(node.down)
app.command("status")(node.status)
app.command("events")(node.events)
app.add_typer(vm.app, name="vm")
app.add_typer(image.app, name="image")
app.add_typer(node.operation_app, name="operation")

if __name__ == "__main__":
    app()
