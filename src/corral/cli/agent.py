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

QuorumOpt = typer.Option(
    "auto", "--quorum", metavar="auto|corosync|none",
    help="Where the membership this host reports comes from: corosync (votequorum; a host "
    "whose corosync is down reports itself out), none, or auto: corosync once it runs here "
    "(/run/corosync.pid) (docs/ha.md \"Quorum (corosync)\")")


CorosyncConfOpt = typer.Option(
    None, "--corosync-conf", metavar="PATH",
    help="Keep this host's corosync.conf (and the authkey beside it) as the engine renders "
    "them for its hosts, e.g. /etc/corosync/corosync.conf: written again, and a running "
    "corosync reloaded, whenever a host joins or leaves (docs/ha.md \"Quorum (corosync)\")")


def _common(state_dir: Path, listen: str, port: int, libvirt_uri: str,
            lock_pidfile: Path | None, quorum: str = "auto",
            corosync_conf: Path | None = None) -> list[str]:
    return ["--state-dir", str(state_dir), "--listen", listen, "--port", str(port),
            "--libvirt-uri", libvirt_uri,
            *(["--lock-daemon-pidfile", str(lock_pidfile)] if lock_pidfile else []),
            "--quorum", quorum,
            *(["--corosync-conf", str(corosync_conf)] if corosync_conf else [])]


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
         libvirt_uri: str = UriOpt, lock_pidfile: Path | None = LockOpt,
         quorum: str = QuorumOpt, corosync_conf: Path | None = CorosyncConfOpt) -> None:
    """Join the cluster of the engine at URL, then serve it in the foreground.

    The token names the engine's CA fingerprint: the CA the engine shows is checked against
    it first. This host then sends a certificate request and gets a certificate of that CA;
    from then on engine and agent accept only each other's certificates. Starts libvirtd
    when none answers. Later starts (a reboot): `corral agent run` (no token)."""
    from corral.agent.__main__ import main

    main(["join", url, "--token", token, *(["--name", name] if name else []),
          *(["--address", address] if address else []),
          *_common(state_dir, listen, port, libvirt_uri, lock_pidfile, quorum,
                   corosync_conf)])


@app.command("run")
def run(state_dir: Path = StateDirOpt, listen: str = ListenOpt, port: int = PortOpt,
        libvirt_uri: str = UriOpt, lock_pidfile: Path | None = LockOpt,
        quorum: str = QuorumOpt, corosync_conf: Path | None = CorosyncConfOpt) -> None:
    """Serve the engine this host joined (`corral agent join`), in the foreground."""
    from corral.agent.__main__ import main

    main(["run", *_common(state_dir, listen, port, libvirt_uri, lock_pidfile, quorum,
                          corosync_conf)])


@app.command("guard", context_settings={"ignore_unknown_options": True})
def guard(agent_argv: list[str] = typer.Argument(..., metavar="-- AGENT-ARGV...",
                                                 help="The agent's command line"),
          leave_command: str = typer.Option(
              "", "--leave-command", metavar="CMD",
              help="Takes this host out of the quorum membership when its lease lapsed with "
              "the agent dead, e.g. \"corosync-cfgtool -H\" (none: nothing)"),
          join_command: str = typer.Option(
              "", "--join-command", metavar="CMD",
              help="Brings it back (starts corosync) once the engine renews the lease"),
          restart_command: str = typer.Option(
              "", "--restart-command", metavar="CMD",
              help="The agent's command line for restarts (default: AGENT-ARGV; e.g. a "
              "first start that joins, restarts that run)"),
          qemu_pid_dir: Path = typer.Option(Path("/run/libvirt/qemu"), "--qemu-pid-dir",
                                            help="libvirt's QEMU pid files")) -> None:
    """Run the agent under the host's lease guard: the supervisor that self-fences.

    The guard runs AGENT-ARGV as its child, restarts it whenever it exits (1 s, doubling to
    10 s), and holds this host's HA lease, which the agent renews with each answer of the
    engine and while the host is in the quorate membership. Once the engine said the host
    has HA VMs the lease is armed; if it then lapses (host cut off, agent dead or hung) the
    guard SIGKILLs every QEMU of the host, HA or not, as a watchdog reset would, and keeps
    doing so until the lease is renewed; with the agent dead or hung it runs --leave-command,
    so that the engine sees the host leave the quorum and restarts its HA VMs elsewhere.

    On a real host run it from a systemd unit, in place of the agent:

        ExecStart=corral agent guard --leave-command "corosync-cfgtool -H"
        --join-command "systemctl start corosync" -- corral agent run

    A host with a hardware watchdog (or the softdog module) should prefer it: a hung kernel
    stops the guard too. SIGTERM stops the agent, then the guard (docs/ha.md "Host lease
    guard")."""
    import os
    import sys

    argv = [sys.executable, "-m", "corral.agent.guard", "--leave-command", leave_command,
            "--join-command", join_command, "--restart-command", restart_command,
            "--qemu-pid-dir", str(qemu_pid_dir), "--", *agent_argv]
    # A fresh small interpreter: the CLI's imports would stay resident in the guard for good
    os.execv(sys.executable, argv)
