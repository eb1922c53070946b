"""`corral cluster show|set|unset`: the settings of the whole cluster."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.api.cluster_settings import ClusterSetting
from corral.cli import cluster_policy
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, client, emit, handled, out

app = typer.Typer(help="Settings of the whole cluster: where and how VMs migrate, how many "
                  "move at once.", no_args_is_help=True)
app.add_typer(cluster_policy.app, name="policy")


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


COLUMNS = [("KEY", lambda s: s.key), ("VALUE", lambda s: _text(s.value)),
           ("DEFAULT", lambda s: _text(s.default)), ("SET", lambda s: "yes" if s.set else "")]


def _said(s: ClusterSetting, fmt: OutputFormat) -> None:
    if fmt == OutputFormat.JSON:
        emit(s, fmt, [])
        return
    out.print(f"{s.key} = {_text(s.value)}"
              + ("" if s.set else " (the default)"), highlight=False)


@app.command("show")
def show(key: str = typer.Argument(None, help="One setting (all when none)"),
         output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The settings: what applies now, the default, and whether an admin set it; with a
    KEY, that one and what it does.

    Example: corral cluster show migration.tls
    """
    with handled(), client(data_dir) as c:
        if key is None:
            emit(c.cluster_settings(), output, COLUMNS)
            return
        s = c.cluster_setting(key)
        if output == OutputFormat.JSON:
            emit(s, output, [])
            return
        _said(s, output)
        out.print(f"  default {_text(s.default)}; {s.kind}"
                  + (f" ({', '.join(s.choices)})" if s.choices else ""), highlight=False)
        out.print(f"  {s.help}", highlight=False)


@app.command("set")
def set_setting(key: str = typer.Argument(..., help="The setting (`corral cluster show`)"),
                value: str = typer.Argument(..., help="Its new value: on/off, a number, a "
                                            "duration (90s, 10m), a percentage (80%), a "
                                            "network (10.20.0.0/24)"),
                output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Set a cluster setting (admins). It applies to what starts from now on.

    Examples:
      corral cluster set migration.network 10.20.0.0/24
      corral cluster set migration.converge_s 5m
    """
    with handled(), client(data_dir) as c:
        _said(c.set_cluster_setting(key, value), output)


@app.command("unset")
def unset(key: str = typer.Argument(..., help="The setting (`corral cluster show`)"),
          output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Bring a setting's default back.

    Example: corral cluster unset migration.network
    """
    with handled(), client(data_dir) as c:
        _said(c.unset_cluster_setting(key), output)
