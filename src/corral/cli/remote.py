"""`corral remote`: the engines this CLI talks to, each pinned to its CA (as in Incus)."""

from __future__ import annotations

from pathlib import Path

import click
import typer

from corral.cli.output import OutputFormat, OutputOpt, emit, err, handled, out
from corral.client import remotes
from corral.errors import InvalidInput, Unauthorized

app = typer.Typer(
    help="Named remotes: other corral engines, each pinned to its CA on first contact.\n\n"
    "`local` is this machine's own node (`corral up`) and the default. Pick one per command "
    "with `corral --remote NAME ...` or CORRAL_REMOTE=NAME; `corral remote switch NAME` "
    "changes the default. Kept in ~/.config/corral/remotes.json (mode 0600).",
    no_args_is_help=True,
)


@app.command("list")
def list_(output: OutputFormat = OutputOpt) -> None:
    """Every remote: name, URL, CA fingerprint (shortened; full with -o json), * = current."""
    with handled():
        rows = remotes.list_remotes()
    emit(rows, output, [
        ("NAME", lambda r: r.name), ("URL", lambda r: r.url or "(no `corral up` node)"),
        ("CA FINGERPRINT", lambda r: remotes.short(r.fingerprint)),
        ("CURRENT", lambda r: "*" if r.current else ""),
    ])


@app.command()
def add(
    name: str = typer.Argument(..., help="A name for it, e.g. prod"),
    url: str = typer.Argument(..., help="https://HOST:PORT of its engine (HOST alone: port 8443)"),
    token: str = typer.Option(
        ..., "--token", prompt="Token", hide_input=True,
        help="An API token of that engine (its DATA_DIR/client.json has the admin one); "
             "asked for when not given"),
    accept_fingerprint: str | None = typer.Option(
        None, "--accept-fingerprint", metavar="SHA256",
        help="The SHA-256 fingerprint the engine's CA must have (`corral remote list -o json` "
             "on its machine shows it as remote local). Without it the fingerprint is shown "
             "and you are asked to confirm it"),
    switch: bool = typer.Option(False, "--switch", help="Also make it the current remote"),
    ca: Path | None = typer.Option(
        None, "--ca", metavar="FILE",
        help="For an engine serving a certificate its admin brought (`corral up --tls-cert`, "
             "`corral cert set`), reached by one of its names: the CA (PEM) that signed it, "
             "e.g. your company's; pinned instead of the engine's own CA"),
    system_ca: bool = typer.Option(
        False, "--system-ca",
        help="Likewise, for a certificate from a public CA: verify the engine with this "
             "machine's trusted CAs (nothing is pinned)"),
) -> None:
    """Add a remote: fetch its engine's CA, check the CA's fingerprint (--accept-fingerprint,
    or your yes), check the token, then save it pinned to that CA.

    Every later command verifies that engine with this CA only: if its CA changes, commands
    fail until you re-pin it (`corral remote remove NAME`, then `add` again). Nothing is
    saved when a check fails. An engine that serves a certificate of your own CA for its
    name is added with --ca FILE or --system-ca instead (no fingerprint to confirm).
    """
    if ca is not None or system_ca:
        with handled():
            _add_brought(name, url, token, ca, system_ca, switch)
        return
    with handled():
        remotes.check_new_name(name)
        base = remotes.normalize_url(url)
        wanted = (remotes.normalize_fingerprint(accept_fingerprint, "accept-fingerprint")
                  if accept_fingerprint else None)
        ca_pem = remotes.fetch_ca(base)
        fp = remotes.fingerprint(ca_pem)
        out.print(f"CA fingerprint of {base} (SHA-256): {fp}", highlight=False)
        if wanted is not None and wanted != fp:
            raise Unauthorized(
                f"the CA of {base} has fingerprint {fp}, not the {wanted} you expect: "
                "it may not be the engine you think; nothing was saved",
                field="accept-fingerprint")
    if wanted is None:
        try:
            ok = typer.confirm("Is this the fingerprint of that engine's CA?", default=False)
        except click.exceptions.Abort:
            ok = False
        if not ok:
            err.print("not added: the fingerprint was not accepted (in a script, pass "
                      "--accept-fingerprint SHA256)")
            raise typer.Exit(1)
    with handled():
        remotes.check(base, token, ca_pem)
        remotes.add_remote(name, base, token, ca_pem, switch=switch)
    out.print(f"remote {name} added ({base}, CA pinned)"
              + (" and current" if switch else f"; `corral remote switch {name}` makes it "
                 f"the default, `corral --remote {name} ...` uses it once"), highlight=False)


def _add_brought(name: str, url: str, token: str, ca: Path | None, system_ca: bool,
                 switch: bool) -> None:
    """`remote add --ca FILE | --system-ca`: the engine's certificate is checked with that CA
    (or the system's) when the token is."""
    if ca is not None and system_ca:
        raise InvalidInput("--ca and --system-ca exclude each other", field="ca")
    remotes.check_new_name(name)
    base = remotes.normalize_url(url)
    ca_pem = remotes.read_ca_file(ca) if ca is not None else None
    remotes.check(base, token, ca_pem)
    remotes.add_remote(name, base, token, ca_pem, switch=switch)
    how = f"CA of {ca} pinned" if ca is not None else "verified with the system's CAs"
    out.print(f"remote {name} added ({base}, {how})" + (" and current" if switch else ""),
              highlight=False)


@app.command()
def switch(name: str = typer.Argument(..., help="A remote (`corral remote list`); local: this "
                                                "machine's node")) -> None:
    """Make NAME the current remote: commands go there unless --remote or CORRAL_REMOTE say
    otherwise."""
    with handled():
        remotes.switch_remote(name)
    out.print(f"current remote: {name}", highlight=False)


@app.command()
def remove(name: str = typer.Argument(..., help="A remote (`corral remote list`)")) -> None:
    """Forget a remote and its pinned CA; if it was current, `local` becomes current.
    `local` itself cannot be removed."""
    with handled():
        was_current = remotes.current() == name
        now = remotes.remove_remote(name)
    out.print(f"remote {name} removed" + (f"; current remote: {now}" if was_current else ""),
              highlight=False)
