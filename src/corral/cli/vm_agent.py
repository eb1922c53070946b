"""`corral vm exec` (a command run by the guest's QEMU guest agent) and `corral vm vnc` (how
to reach the VM's VNC display from a desktop VNC client)."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

import typer

from corral.api import VmExec, VmVnc
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, build, client, handled, out


def exec_command(
    name: str = typer.Argument(..., help="A running VM whose guest runs qemu-guest-agent"),
    command: list[str] = typer.Argument(..., help="The program and its arguments, after --"),
    timeout: int = typer.Option(30, "--timeout", help="Seconds to wait for it (at most 300)"),
    stdin: bool = typer.Option(False, "--stdin", help="Feed this command's standard input "
                               "to it (text, at most 1 MiB)"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Run a command in the guest through its QEMU guest agent (no SSH, no network needed)
    and exit with its exit code; its output is printed as it comes back.

    Example: corral vm exec web -- sh -c 'uptime; ip -4 addr'
    """
    with handled():
        req = build(VmExec, command=command, timeout=timeout,
                    stdin=sys.stdin.read() if stdin else None)
        with client(data_dir) as c:
            done = c.exec_vm(name, req)
    if output == OutputFormat.JSON:
        print(json.dumps(done.model_dump(mode="json"), indent=2))
    else:
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        if done.truncated:
            sys.stderr.write("corral: the output was cut at 1 MiB a stream\n")
    if done.timed_out:
        sys.stderr.write(f"corral: the command did not exit within {timeout} s (it goes on "
                         "running in the guest)\n")
        raise typer.Exit(124)  # as timeout(1)
    if done.exit_code is None:
        raise typer.Exit(128 + (done.signal or 0))  # killed by a signal, as a shell says
    raise typer.Exit(done.exit_code)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def tunnel_lines(vnc: VmVnc, engine_url: str, local_port: int | None = None) -> list[str]:
    """What to run on a desktop to reach the display: an SSH tunnel to the VM's host."""
    local = local_port or vnc.port
    host = vnc.host_address
    if not host or _loopback(host):  # the agent is on the engine's machine
        host = urlsplit(engine_url).hostname or ""
    lines = [f"VM {vnc.vm}: VNC display on {vnc.listen}:{vnc.port} of host {vnc.host}, "
             "reachable from that host only."]
    if not host or _loopback(host):
        lines += ["On this machine, point a VNC client at it:",
                  f"  vncviewer {vnc.listen}::{vnc.port}",
                  "From a desktop, tunnel to this machine first:",
                  f"  ssh -N -L {local}:{vnc.listen}:{vnc.port} root@THIS_MACHINE"]
    else:
        lines += ["From a desktop, open an SSH tunnel to the host, then point a VNC client "
                  "at the local end:",
                  f"  ssh -N -L {local}:{vnc.listen}:{vnc.port} root@{host}"]
    lines.append(f"  vncviewer localhost::{local}")
    return lines


def vnc(
    name: str = typer.Argument(..., help="A running VM with graphics vnc"),
    local_port: int = typer.Option(None, "--local-port", help="Local end of the tunnel "
                                   "(default: the display's port)", min=1, max=65535),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """How to reach the VM's VNC display from a desktop VNC client: it listens on its host's
    loopback only, so this prints an `ssh -L` tunnel to that host and the port to open."""
    with handled(), client(data_dir) as c:
        shown = c.vm_vnc(name)
        if output == OutputFormat.JSON:
            print(json.dumps(shown.model_dump(mode="json"), indent=2))
            return
        for line in tunnel_lines(shown, c.url, local_port):
            out.print(line, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("exec")(exec_command)
    app.command("vnc")(vnc)
