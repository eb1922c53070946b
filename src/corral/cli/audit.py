"""`corral audit list` and `corral audit verify`: the engine's audit log (admins)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from corral.api.audit import AuditEntry
from corral.api.users import parse_duration
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, client, emit, err, handled, out
from corral.errors import InvalidInput

app = typer.Typer(help="The audit log: every mutating request (refused ones too), login and "
                  "logout, with who, from where, in which project and the outcome; each "
                  "record chained to the one before by a hash (needs permission audit.read: "
                  "admins).", no_args_is_help=True)


def _outcome(e: AuditEntry) -> str:
    return f"{e.status} {e.error}" if e.error else str(e.status)


COLUMNS = [("SEQ", lambda e: e.seq), ("TIME", lambda e: e.time.strftime("%Y-%m-%d %H:%M:%S")),
           ("USER", lambda e: e.user or "-"), ("TOKEN", lambda e: e.token_name or "-"),
           ("CLIENT", lambda e: e.client or "-"), ("PROJECT", lambda e: e.project),
           ("ACTION", lambda e: e.action), ("TARGET", lambda e: e.target),
           ("OUTCOME", _outcome)]


def parse_since(text: str) -> datetime:
    """``1h``, ``30d`` (that long ago) or an ISO 8601 time (UTC unless it says)."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text, field="since"))
    except InvalidInput:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--since {text!r}: a duration such as 1h or 30d, or a time such "
                           "as 2026-01-31T12:00", field="since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("list")
def list_audit(
    since: str | None = typer.Option(None, "--since", metavar="WHEN",
                                     help="Only records from then on: 1h, 7d (ago) or a time "
                                     "such as 2026-01-31T12:00 (UTC)"),
    user: str | None = typer.Option(None, "--user", "-u", help="Only this user's"),
    project: str | None = typer.Option(None, "--project", "-p",
                                       help="Only requests made in this project"),
    action: str | None = typer.Option(None, "--action", "-a",
                                      help="Only this action (vm.delete, login, logout), "
                                      "or all of a kind: vm.*"),
    limit: int = typer.Option(100, "--limit", "-n", min=1, max=1000,
                              help="At most this many records (the newest)"),
    output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """The newest records first: time, user, token, client address, project, action, the
    path acted on, and the outcome (HTTP status and error code).

    Example: corral audit list --since 1h --action vm.delete
    """
    with handled():
        when = parse_since(since) if since else None
        with client(data_dir) as c:
            rows = c.list_audit(since=when, user=user, project=project, action=action,
                                limit=limit)
        emit(rows, output_fmt, COLUMNS)


@app.command("verify")
def verify(output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Check the hash chain of every kept record: prints OK and the count, or the first
    broken seq (a record edited, removed or reordered in the database) and exits 1."""
    with handled(), client(data_dir) as c:
        result = c.verify_audit()
    if output_fmt == OutputFormat.JSON:
        print(result.model_dump_json(indent=2))
    elif result.ok:
        out.print(f"[green]OK[/]: {result.message}", highlight=False)
    else:
        err.print(f"[bold red]BROKEN[/] at seq {result.broken_seq}: {result.message}",
                  highlight=False)
    if not result.ok:
        raise typer.Exit(1)
