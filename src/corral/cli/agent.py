"""`corral agent join|run`: this machine as a host of a cluster (the agent, in the foreground).

The same program as `python -m corral.agent` (corral.agent.__main__); here for users."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Run this machine as a host of a cluster: join an engine, then serve "
                       "it (mutual TLS).", no_args_is_help=True)

StateDirOpt = typer.Option(Path("/var/lib/corral-agent"), "--state-dir",
                           help="The agent's files: its identity, storage, networks")
ListenOpt = typer.Option("0.0.0.0", "--listen", help="Address to serve the engine on")
PortOpt = typer.Option(8444, "--port", help="Port to serve the engine on")
UriOpt = typer.Option("qemu:///system", "--libvirt-uri")
LockOpt = typer.Option(
    None, "--lock-daemon-pidfile", metavar="PATH",
    help="virtlockd's pid file (/run/virtlockd.pid), where qemu.conf sets lock_manager = "
    "\"lockd\": if virtlockd dies, this host's QEMUs are killed (their disk leases died "
    "with it), then virtlockd and libvirtd are started again (docs/ha.md \"Disk leases\")")


def _common(state_dir: Path, listen: str, port: int, libvirt_uri: str,
            lock_pidfile: Path | None) -> list[str]:
    return ["--state-dir", str(state_dir), "--listen", listen, "--port", str(port),
            "--libvirt-uri", libvirt_uri,
            *(["--lock-daemon-pidfile", str(lock_pidfile)] if lock_pidfile else [])]


@app.command("join")
def join(url: str = typer.Argument(..., help="The engine: https://HOST:PORT"),
         token: str = typer.Option(..., "--token",
                                   help="From `corral host token` on the engine"),
         name: str | None = typer.Option(None, "--name",
                                         help="This host's name (default: its hostname)"),
         address: str | None = typer.Option(
             None, "--address", help="Where the engine reaches this agent (default: --listen, "
             "or the address this machine reaches the engine from)"),
         state_dir: Path = StateDirOpt, listen: str = ListenOpt, port: int = PortOpt,
         libvirt_uri: str = UriOpt, lock_pidfile: Path | None = LockOpt) -> None:
    """Join the cluster of the engine at URL, then serve it in the foreground.

    The token names the engine's CA fingerprint: the CA the engine shows is checked against
    it first. This host then sends a certificate request and gets a certificate of that CA;
    from then on engine and agent accept only each other's certificates. Starts libvirtd
    when none answers. Later starts (a reboot): `corral agent run` (no token)."""
    from corral.agent.__main__ import main

    main(["join", url, "--token", token, *(["--name", name] if name else []),
          *(["--address", address] if address else []),
          *_common(state_dir, listen, port, libvirt_uri, lock_pidfile)])


@app.command("run")
def run(state_dir: Path = StateDirOpt, listen: str = ListenOpt, port: int = PortOpt,
        libvirt_uri: str = UriOpt, lock_pidfile: Path | None = LockOpt) -> None:
    """Serve the engine this host joined (`corral agent join`), in the foreground."""
    from corral.agent.__main__ import main

    main(["run", *_common(state_dir, listen, port, libvirt_uri, lock_pidfile)])
