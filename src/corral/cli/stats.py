"""`corral vm stats NAME` and `corral host stats NAME`: the last 10 minutes of CPU, memory,
disk and network, as the web UI's graphs show them."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from corral.api.stats import Stats, StatSeries
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, client, handled, out

_BARS = "▁▂▃▄▅▆▇█"
_TITLES = {"cpu_percent": "CPU", "memory_bytes": "memory", "disk_read_bps": "disk read",
           "disk_write_bps": "disk write", "net_rx_bps": "net in", "net_tx_bps": "net out"}


def _human(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.1f} %"
    suffix = "/s" if unit == "bytes/s" else ""
    for prefix in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or prefix == "GiB":
            return f"{value:.0f} {prefix}{suffix}" if prefix == "B" else \
                f"{value:.1f} {prefix}{suffix}"
        value /= 1024
    return str(value)  # unreachable: GiB ends the loop


def sparkline(values: list[float], width: int = 30) -> str:
    """The last ``width`` values as bars scaled to their own maximum."""
    shown = values[-width:]
    top = max(shown, default=0.0)
    if top <= 0:
        return _BARS[0] * len(shown)
    return "".join(_BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1)))] for v in shown)


def _row(series: StatSeries) -> tuple[str, str, str]:
    values = [v for _, v in series.points]
    if not values:
        return "-", "-", ""
    return (_human(values[-1], series.unit), _human(max(values), series.unit),
            sparkline(values))


def _print(shown: Stats, output: OutputFormat) -> None:
    if output == OutputFormat.JSON:
        print(json.dumps(shown.model_dump(mode="json"), indent=2))
        return
    if not any(s.points for s in shown.series.values()):
        where = f"on {shown.host}" if shown.host else "on no host"
        out.print(f"no samples yet for {shown.kind} {shown.name} ({where}): a running VM's "
                  f"first come after about {int(2 * (shown.interval_s or 5))} s")
        return
    table = Table(title=f"{shown.kind} {shown.name} — last "
                  f"{int((shown.keep_s or 600) / 60)} min, every {shown.interval_s:g} s")
    for column in ("metric", "now", "max", "trend"):
        table.add_column(column)
    for metric, series in shown.series.items():
        table.add_row(_TITLES.get(metric, metric), *_row(series))
    out.print(table)


def vm_stats(name: str = typer.Argument(..., help="A VM (its host measures it while it runs)"),
             output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The VM's CPU (100 % = one CPU busy), memory in use, disk and network bytes/s over the
    last 10 minutes, sampled by its host every 5 s: now, the maximum, and a trend.

    Example: corral vm stats web -o json   (each metric: pairs of unix time, value)
    """
    with handled(), client(data_dir) as c:
        _print(c.vm_stats(name), output)


def host_stats(name: str = typer.Argument(..., help="A host (`corral host list`)"),
               output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The host's CPU % (its VMs' CPU time over all its CPUs) and its VMs' memory, disk and
    network bytes/s over the last 10 minutes."""
    with handled(), client(data_dir) as c:
        _print(c.host_stats(name), output)
