"""Shared CLI plumbing: the client, tables or JSON, operation progress, error exit codes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from corral.api import Operation
from corral.client import Client
from corral.errors import CorralError, InvalidInput

out = Console()
err = Console(stderr=True)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOpt = typer.Option(OutputFormat.TABLE, "--output", "-o", help="table or json")
DataDirOpt = typer.Option(None, "--data-dir", envvar="CORRAL_DATA_DIR",
                          help="Node data dir (default /var/lib/corral as root)")
WaitOpt = typer.Option(True, "--wait/--no-wait", help="Wait for the operation and show progress")


# The global `--remote` (or CORRAL_REMOTE), set by the app's callback for this invocation.
selected_remote: str | None = None
# The global `--project` (or CORRAL_PROJECT): beats the one `corral project switch` kept.
selected_project: str | None = None


def client(data_dir: Path | None = None) -> Client:
    """The chosen remote beats --data-dir/CORRAL_DATA_DIR; see corral.client.remotes. Its
    requests act in --project, else in the project the config keeps (`project switch`)."""
    if selected_remote:
        return Client.from_config(remote=selected_remote, project=selected_project)
    return Client.from_config(data_dir, project=selected_project)


@contextmanager
def handled() -> Iterator[None]:
    """Errors become one clear line on stderr and a non-zero exit, never a traceback."""
    try:
        yield
    except CorralError as exc:
        field = f" \\[{exc.field}]" if exc.field else ""  # "\\[" is a literal "[" for Rich
        err.print(f"[bold red]Error[/] ({exc.code}){field}: {exc.message}", highlight=False)
        raise typer.Exit(2 if exc.status < 500 else 1) from None


def emit(rows: Sequence[BaseModel] | BaseModel, fmt: OutputFormat,
         columns: list[tuple[str, Callable[[Any], object]]]) -> None:
    items = [rows] if isinstance(rows, BaseModel) else list(rows)
    if fmt == OutputFormat.JSON:
        data = [r.model_dump(mode="json") for r in items]
        print(json.dumps(data[0] if isinstance(rows, BaseModel) else data, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for title, _ in columns:
        table.add_column(title)
    for r in items:
        table.add_row(*[str(get(r)) for _, get in columns])
    out.print(table)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def follow(c: Client, op: Operation, what: str, wait: bool = True,
           fmt: OutputFormat = OutputFormat.TABLE, timeout: float = 3600) -> Operation:
    """Show a progress bar until the operation ends; exit non-zero if it failed."""
    if not wait:
        if fmt == OutputFormat.JSON:
            print(op.model_dump_json(indent=2))
        else:
            out.print(f"operation {op.id} {op.status.value}: {what}")
        return op
    deadline = time.monotonic() + timeout
    show = fmt == OutputFormat.TABLE and sys.stderr.isatty()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=err, disable=not show, transient=True) as bar:
        task = bar.add_task(what, total=100)
        while not op.status.done and time.monotonic() < deadline:
            bar.update(task, completed=op.progress,
                       description=f"{what}: {op.message}" if op.message else what)
            op = c.wait_quiet(op.id, timeout=1)
    if fmt == OutputFormat.JSON:
        print(op.model_dump_json(indent=2))
    if op.status.value in ("failure", "cancelled"):
        msg = op.outcome()
        verb = "was cancelled" if op.status.value == "cancelled" else "failed"
        err.print(f"[bold red]Error[/]: {what} {verb}: {msg}", highlight=False)
        raise typer.Exit(1)
    if not op.status.done:
        err.print(f"[yellow]{what}: still {op.status.value} after {timeout:g} s (operation {op.id})")
        raise typer.Exit(1)
    if fmt == OutputFormat.TABLE:
        out.print(f"[green]✓[/] {what}")
    return op


M = TypeVar("M", bound=BaseModel)


def build(model: type[M], **fields: Any) -> M:
    """A request type built from CLI options; its first validation error as InvalidInput."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or None
        raise InvalidInput(str(first["msg"]).removeprefix("Value error, "), field=field) from None


def show_one(model: BaseModel, fmt: OutputFormat, width: int = 14) -> None:
    """One resource: JSON, or one `key value` line per field."""
    if fmt == OutputFormat.JSON:
        emit(model, fmt, [])
        return
    for key, value in model.model_dump(mode="json").items():
        out.print(f"[bold]{key:{width}}[/] {value}", highlight=False)
