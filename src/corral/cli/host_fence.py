"""`corral host fence ...` (a host's fence methods) and `corral host power ...` (power its
machine through them)."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.api.fencing import FenceMethod, FenceMethodSet, FenceTest
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
)
from corral.errors import InvalidInput
from corral.secret_file import first_line

app = typer.Typer(help="Fence methods: how corral powers a host off (HA fences a lost host "
                  "before its VMs start elsewhere) and on. Each is a ClusterLabs fence agent "
                  "(fence_ipmilan, fence_redfish, ... from Debian's fence-agents) with its "
                  "options; several are tried in order.", no_args_is_help=True)

HostArg = typer.Argument(..., help="Host name (`corral host list`)")

COLUMNS = [
    ("#", lambda m: m.position), ("AGENT", lambda m: m.agent),
    ("OPTIONS", lambda m: " ".join([f"{k}={v}" for k, v in sorted(m.options.items())]
                                   + [f"{k}=(set)" for k in m.secrets]) or "-"),
]
CHECK_COLUMNS = [
    ("#", lambda c: c.position), ("AGENT", lambda c: c.agent),
    ("POWER", lambda c: c.power or "unknown"), ("DETAIL", lambda c: c.detail or "-"),
]


def _options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--option {pair!r}: KEY=VALUE, e.g. ip=10.0.0.5",
                               field="option")
        options[key] = value
    return options


@app.command("set")
def set_method(
    host: str = HostArg,
    agent: str = typer.Option(..., "--agent", help="The fence agent, e.g. fence_ipmilan "
                              "(`ls /usr/sbin/fence_*`)"),
    option: list[str] = typer.Option([], "--option", "-O", help="KEY=VALUE given to the "
                                     "agent (repeat): ip=, username=, plug=, lanplus=1..."),
    password_file: Path | None = typer.Option(None, "--password-file", help="A file whose "
                                              "first line is the password (option "
                                              "`password`); never on the command line"),
    position: int | None = typer.Option(None, "--order", help="Its place (1 first); "
                                        "replaces the method there. Default: after the last"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Add a fence method to a host (or replace the one at --order).

    Options that are passwords (password, passwd, community...) are stored encrypted with
    a key kept in the engine's data dir, and never shown again. Run `corral host fence test`
    after.

    Example: corral host fence set h2 --agent fence_ipmilan -O ip=10.0.0.12 -O username=admin
    -O lanplus=1 --password-file ~/bmc-h2.pw
    """
    with handled(), client(data_dir) as c:
        options = _options(option)
        if password_file is not None:
            options["password"] = first_line(password_file, "password_file")
        req = build(FenceMethodSet, agent=agent, options=options, position=position)
        emit(c.set_fence_method(host, req), output, COLUMNS)


@app.command("show")
def show(host: str = HostArg, output: OutputFormat = OutputOpt,
         data_dir: Path = DataDirOpt) -> None:
    """A host's fence methods, in the order they are tried (secrets show as `(set)`)."""
    with handled(), client(data_dir) as c:
        methods: list[FenceMethod] = c.fence_methods(host)
        if not methods and output == OutputFormat.TABLE:
            out.print(f"host {host} has no fence method (`corral host fence set {host}`)",
                      highlight=False)
            return
        emit(methods, output, COLUMNS)


@app.command("remove")
def remove(host: str = HostArg,
           position: int | None = typer.Option(None, "--order", help="This method only "
                                               "(default: every method)"),
           output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Remove a host's fence method (or all of them): HA can then no longer fence it."""
    with handled(), client(data_dir) as c:
        left = c.remove_fence_method(host, position)
        if output == OutputFormat.JSON:
            emit(left, output, COLUMNS)
        else:
            out.print(f"[green]✓[/] host {host}: {len(left)} fence method(s) left",
                      highlight=False)


def _checks(result: FenceTest, output: OutputFormat) -> None:
    emit(result, output, []) if output == OutputFormat.JSON else \
        emit(result.checks, output, CHECK_COLUMNS)


@app.command("test")
def test(host: str = HostArg, output: OutputFormat = OutputOpt,
         data_dir: Path = DataDirOpt) -> None:
    """Ask each fence method's device for the host's power (`status`); nothing is powered.
    Exits non-zero when a method could not tell."""
    with handled(), client(data_dir) as c:
        result = c.test_fence(host)
        _checks(result, output)
        if not all(ch.ok for ch in result.checks):
            raise typer.Exit(1)


def power(
    host: str = HostArg,
    action: str = typer.Argument(..., help="on, off, cycle (off, confirmed, on) or status"),
    force: bool = typer.Option(False, "--force", help="off, cycle: even with VMs running on "
                               "the host (they go down with it)"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Power a host's machine through its fence methods (`corral host fence set`), the
    first method that confirms wins. Refused for off and cycle while VMs run on the host
    (named) unless --force: `corral host shutdown` moves them off first.

    status asks every method (as `corral host fence test`).

    Example: corral host power h2 cycle
    """
    with handled(), client(data_dir) as c:
        if action == "status":
            result = c.test_fence(host)
            _checks(result, output)
            if not all(ch.ok for ch in result.checks):
                raise typer.Exit(1)
            return
        if action not in ("on", "off", "cycle"):
            raise InvalidInput(f"action {action!r}: on, off, cycle or status", field="action")
        done = follow(c, c.host_power(host, action, force), f"power {action} of host {host}",
                      wait, output, timeout=600)
        if wait and output == OutputFormat.TABLE and done.message:
            out.print(done.message, highlight=False)
