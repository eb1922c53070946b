"""`corral cert`: the certificate this node's engine serves besides its own (a brought one)."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.cli.output import DataDirOpt, handled, out
from corral.errors import InvalidInput
from corral.node.paths import NodePaths, default_data_dir

app = typer.Typer(
    help="A certificate from your CA for the engine's HTTPS API, kept in DATA_DIR/tls.\n\n"
    "The engine shows it to clients that ask for one of its DNS names (browsers, `corral "
    "remote add URL --system-ca` or `--ca FILE`); agents and clients that reach the "
    "engine by IP address (the local CLI) keep corral's own certificate. Only TLS 1.2 "
    "and newer are served. `corral up --tls-cert F --tls-key F` uses one for a single "
    "start instead.",
    no_args_is_help=True,
)


def _tls_dir(data_dir: Path | None) -> Path:
    return NodePaths(data_dir or default_data_dir()).tls_dir


@app.command("set")
def set_(
    cert: Path = typer.Option(..., "--cert", metavar="FILE",
                              help="The certificate (PEM), its chain after it"),
    key: Path = typer.Option(..., "--key", metavar="FILE",
                             help="Its private key (PEM, without a passphrase)"),
    data_dir: Path = DataDirOpt,
) -> None:
    """Check a certificate and key (readable, matching, valid now, with a DNS name) and
    keep copies (mode 0600) that every later `corral up` serves. Takes effect at the
    engine's next start (`corral down`, `corral up`)."""
    from corral.engine import server_tls  # the engine's imports: only here

    with handled():
        brought = server_tls.store(_tls_dir(data_dir), cert, key)
    out.print(f"kept for the next start: names {', '.join(brought.names)}, valid until "
              f"{brought.not_after:%Y-%m-%d}", highlight=False)


@app.command()
def show(data_dir: Path = DataDirOpt) -> None:
    """The certificate `corral cert set` kept: its names and end of validity."""
    from corral.engine import server_tls

    with handled():
        files = server_tls.stored(_tls_dir(data_dir))
        if files is None:
            raise InvalidInput("no certificate was set: the engine serves corral's own "
                               "(`corral cert set --cert F --key F`)", field="cert")
        brought = server_tls.check_brought(*files)
    out.print(f"{brought.cert}: names {', '.join(brought.names)}, valid until "
              f"{brought.not_after:%Y-%m-%d}", highlight=False)


@app.command()
def unset(data_dir: Path = DataDirOpt) -> None:
    """Forget the certificate `corral cert set` kept: the next start serves corral's own
    certificate only."""
    from corral.engine import server_tls

    with handled():
        found = server_tls.forget(_tls_dir(data_dir))
    out.print("forgotten; the next start serves corral's own certificate only" if found
              else "no certificate was set", highlight=False)
