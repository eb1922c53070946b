"""`corral cluster policy set|show`: load balancing by live migration."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from corral.api.cluster_policy import ClusterPolicy, ClusterPolicySet
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    client,
    emit,
    handled,
    out,
)

app = typer.Typer(help="Load balancing: move VMs live off hosts that stay overloaded.",
                  no_args_is_help=True)


class Mode(StrEnum):
    NONE = "none"
    BALANCE = "balance"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}%"


def _span(seconds: int) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _print(p: ClusterPolicy) -> None:
    if p.mode == Mode.NONE:
        out.print("policy: none (VMs stay where they are placed)", highlight=False)
    else:
        out.print(f"policy: balance: CPU {p.cpu_percent}%, memory {p.memory_percent}%, "
                  f"every {_span(p.interval_s)} over a {_span(p.window_s)} window; "
                  f"margin {p.margin_percent}%, cool-down {_span(p.cooldown_s)}"
                  + ("" if p.running else " (this engine's balancer is not running)"),
                  highlight=False)
    out.print()
    emit(p.hosts, OutputFormat.TABLE, [
        ("HOST", lambda h: h.host), ("STATUS", lambda h: h.status),
        ("CPU", lambda h: _pct(h.cpu_percent)),
        ("CPU (WINDOW)", lambda h: _pct(h.window_cpu_percent)),
        ("MEMORY", lambda h: _pct(h.memory_percent)),
        ("MEMORY (WINDOW)", lambda h: _pct(h.window_memory_percent)),
        ("ABOVE", lambda h: ", ".join(h.above) or "-"),
        ("WATCHED", lambda h: "yes" if h.covered else f"not yet ({h.samples} reports)")])
    out.print()
    if not p.decisions:
        out.print("no decisions yet", highlight=False)
        return
    out.print("recent decisions (newest first):", highlight=False)
    for d in p.decisions:
        op = f" [operation {d.operation}: {d.status}]" if d.operation else ""
        # markup=False: "[operation ...]" is text, not Rich markup
        out.print(f"  {d.at:%Y-%m-%d %H:%M:%S} {d.reason}{op}", highlight=False, markup=False)


@app.command("set")
def set_policy(
    mode: Mode = typer.Argument(..., help="balance: move VMs off overloaded hosts; none: "
                                "leave them (the default)"),
    cpu: str = typer.Option(None, "--cpu", help="CPU threshold: a host whose VMs use more "
                            "of its CPUs over the window gives one away (80%)"),
    memory: str = typer.Option(None, "--memory", help="Memory threshold (85%)"),
    interval: str = typer.Option(None, "--interval", help="How often to look (60s)"),
    window: str = typer.Option(None, "--window", help="How long a host must stay above a "
                               "threshold (3m)"),
    cooldown: str = typer.Option(None, "--cooldown", help="How long a VM that moved stays "
                                 "put (30m)"),
    margin: str = typer.Option(None, "--margin", help="How far below each threshold a "
                               "target must stay with the VM: no ping-pong (10%)"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Set the cluster's balancing policy (admins). What is not given keeps its value.

    Each interval the engine looks at every host's load over the window; off the host
    furthest above a threshold it moves at most one VM, live, to a host that stays the
    margin below every threshold with it. Each move is an operation whose message says why.

    Examples:
      corral cluster policy set balance --cpu 80% --memory 85% --interval 60s
      corral cluster policy set none
    """
    req = ClusterPolicySet(mode=mode.value, cpu_percent=cpu, memory_percent=memory,
                           interval_s=interval, window_s=window, cooldown_s=cooldown,
                           margin_percent=margin)
    with handled(), client(data_dir) as c:
        p = c.set_cluster_policy(req)
        if output == OutputFormat.JSON:
            emit(p, output, [])
            return
        _print(p)


@app.command("show")
def show(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The policy, each host's load (last report and means over the window) and the
    balancer's recent decisions with their operations.

    Example: corral cluster policy show
    """
    with handled(), client(data_dir) as c:
        p = c.cluster_policy()
        if output == OutputFormat.JSON:
            emit(p, output, [])
            return
        _print(p)
