"""`corral host ...`: the hosts VMs run on, and their settings (KSM)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from corral.api import Operation
from corral.api.hosts import HostPatch
from corral.cli import host_fence, host_tag
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    WaitOpt,
    build,
    client,
    emit,
    err,
    follow,
    handled,
    out,
    show_one,
)
from corral.client import Client
from corral.errors import InvalidInput

app = typer.Typer(help="The hosts VMs run on: list them, show one, change its settings.",
                  no_args_is_help=True)

def _of(used: int, total: int | None, unit: str = "") -> str:
    """What VMs take of the host's capacity: 3/4 (vCPUs), 1536/4096 MiB."""
    return f"{used}/{total if total is not None else '?'}{unit}"


COLUMNS = [
    ("NAME", lambda h: h.name), ("STATE", lambda h: h.status),
    ("CPUS", lambda h: _of(h.allocated.cpus, h.cpus)),
    ("MEMORY", lambda h: _of(h.allocated.memory_mib, h.memory_mib, " MiB")),
    ("VMS", lambda h: h.allocated.vms), ("VIRT", lambda h: h.virt_type or "-"),
    ("TAGS", lambda h: ",".join(h.tags) or "-"),
    ("ADDRESS", lambda h: h.address or h.url),
]


@app.command("list")
def list_hosts(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Every host: its state, the vCPUs and memory its VMs take of its CPUs and memory
    (allocated/total: stopped VMs count, they keep their place), its VMs, KVM or TCG.

    States: up (takes new VMs), maintenance (takes none until `host activate`),
    unresponsive (its agent stopped answering), down."""
    with handled(), client(data_dir) as c:
        emit(c.list_hosts(), output, COLUMNS)


@app.command("show")
def show(name: str = typer.Argument(..., help="Host name (`corral host list`)"),
         output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """One host: its facts, and its memory now (KSM on or off and what it spares, the memory
    running VMs booted with and what their balloons leave them)."""
    with handled(), client(data_dir) as c:
        show_one(c.get_host(name), output)


@app.command("set")
def set_host(
    name: str = typer.Argument(..., help="Host name (`corral host list`)"),
    ksm: str = typer.Option(None, "--ksm", help="on: the kernel merges identical memory "
                            "pages of VMs (more VMs fit: memory overcommit, some CPU spent "
                            "scanning); off: merged pages are split again"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Change a host's settings.

    Example: corral host set h1 --ksm on
    """
    with handled():
        if ksm is None:
            raise InvalidInput("nothing to change: give an option (see --help)")
        if ksm not in ("on", "off"):
            raise InvalidInput(f"--ksm is on or off, not {ksm!r}", field="ksm")
        req = build(HostPatch, ksm=ksm == "on")
        with client(data_dir) as c:
            follow(c, c.update_host(name, req), f"KSM {ksm} on host {name}", wait, output)


NameArg = typer.Argument(..., help="Host name (`corral host list`)")


@app.command("maintenance")
def maintenance(
    name: str = NameArg,
    force: bool = typer.Option(False, "--force", help="Go ahead when some VMs cannot move: "
                               "they stay on the host (those of evacuation mode stop are "
                               "stopped), listed at the end"),
    explain: bool = typer.Option(False, "--explain", help="Dry run: print each VM's move "
                                 "(live, offline, stop-move-start, stop) and target, or why "
                                 "it cannot move; move nothing"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Empty a host, then keep new VMs off it until `corral host activate`.

    Each VM goes as its evacuation mode says (`corral vm set NAME --evacuation MODE`):
    auto (default) live-migrates a running VM, or stops it, moves it and starts it on the
    target when it cannot move live; migrate moves it live only; stop stops it and leaves
    it on the host. Stopped VMs have their definition moved. Targets are chosen by the
    scheduler with every rule the VM was created with (room, host tags, groups: two
    members of an anti-affinity group never land together), a few VMs at a time
    (`corral cluster set migration.parallel N`), each move printed as it ends.

    If a VM cannot move (no room, a disk that cannot be moved, a VM in the middle of an
    operation), nothing moves and the host stays up: the error names each VM and why;
    --force leaves those on it. A move that fails stops the evacuation: the host is up
    again, what moved stays moved. `corral operation cancel ID` does the same on purpose.

    Examples: corral host maintenance h2 --explain
              corral host maintenance h2
    """
    with handled(), client(data_dir) as c:
        if explain:
            plan = c.evacuation_plan(name)
            if output == OutputFormat.JSON:
                print(plan.model_dump_json(indent=2))
            else:
                for line in plan.text:
                    print(line)
            if plan.blocked:
                err.print(f"{len(plan.blocked)} VM(s) cannot move: without --force the "
                          "maintenance is refused", highlight=False)
            return
        op = c.host_maintenance(name, force)
        if wait and output == OutputFormat.TABLE:
            op = _print_moves(c, op)
        op = follow(c, op, f"host {name} to maintenance", wait, output)
        if wait and output == OutputFormat.TABLE and op.message:
            print(op.message)  # what moved, was stopped, was left (and why)


def _print_moves(c: Client, op: Operation, timeout: float = 24 * 3600) -> Operation:
    """Print each VM moved ("2/5 moved: web → h2 (640 ms)", the head of the evacuation's
    message) as the polls see it, until the evacuation ends."""
    deadline = time.monotonic() + timeout
    said = None
    while not op.status.done and time.monotonic() < deadline:
        head = (op.message or "").split("; ")[0]
        if " moved: " in head and head != said:
            print(head, flush=True)
            said = head
        op = c.wait_quiet(op.id, timeout=1)
    return op


PowerForceOpt = typer.Option(False, "--force", help="As `host maintenance --force`: VMs "
                             "that cannot move stay, and go down with the machine")


@app.command("reboot")
def reboot(
    name: str = NameArg,
    return_vms: bool = typer.Option(False, "--return", help="Once the host is back: activate "
                                    "it and bring back the VMs that moved off (where the "
                                    "rules allow; the others are named)"),
    force: bool = PowerForceOpt,
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Empty a host (as `corral host maintenance`, unless it is in maintenance already),
    reboot its machine, and wait until its agent is back.

    The host's agent runs the machine's reboot command (`systemctl reboot`; `corral agent
    run --reboot-command` names another; a lab host is power-cycled). The host stays in
    maintenance after it, unless --return.

    Example: corral host reboot h2 --return
    """
    with handled(), client(data_dir) as c:
        done = follow(c, c.host_reboot(name, return_vms, force), f"rebooting host {name}",
                      wait, output, timeout=24 * 3600)
        if wait and output == OutputFormat.TABLE and done.message:
            out.print(done.message, highlight=False)  # what moved, whether all came back


@app.command("shutdown")
def shutdown(name: str = NameArg, force: bool = PowerForceOpt, wait: bool = WaitOpt,
             output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Empty a host (as `corral host maintenance`), then power its machine off.

    The host stays in maintenance: power it on, then `corral host activate`.

    Example: corral host shutdown h2
    """
    with handled(), client(data_dir) as c:
        done = follow(c, c.host_shutdown(name, force), f"shutting down host {name}", wait,
                      output, timeout=24 * 3600)
        if wait and output == OutputFormat.TABLE and done.message:
            out.print(done.message, highlight=False)


@app.command("activate")
def activate(name: str = NameArg, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
             data_dir: Path = DataDirOpt) -> None:
    """Take a host out of maintenance: it takes new VMs again. Its agent must answer (its
    facts are read anew); refused (409) for a host that is not in maintenance.

    Example: corral host activate h2
    """
    with handled(), client(data_dir) as c:
        follow(c, c.host_activate(name), f"activating host {name}", wait, output)


@app.command("remove")
def remove(
    name: str = NameArg,
    force: bool = typer.Option(False, "--force", help="For a dead host (unresponsive or "
                               "down) only: its VMs stay listed as `unknown`, on no host; "
                               "nothing restarts them anywhere (`vm delete` removes them)"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Forget a host: its certificate is no longer accepted, its own `dir` pools are
    forgotten (their files stay on it); networks, shared pools and images stay.

    Refused while VMs are defined on it (the error names them): delete or move them first.

    Example: corral host remove h3
    """
    with handled(), client(data_dir) as c:
        follow(c, c.remove_host(name, force), f"removing host {name}", wait, output)


app.add_typer(host_tag.app, name="tag")  # corral host tag add|remove HOST TAG
app.add_typer(host_fence.app, name="fence")  # corral host fence set|show|remove|test
app.command("power")(host_fence.power)  # corral host power HOST on|off|cycle|status


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl_seconds(text: str) -> int:
    unit = text[-1:].lower()
    number = text[:-1] if unit in _TTL_UNITS else text
    if not number.isdigit():
        raise InvalidInput(f"--ttl {text!r}: a duration like 30m, 1h or 2d", field="ttl")
    return int(number) * _TTL_UNITS.get(unit, 1)


@app.command("token")
def token(ttl: str = typer.Option("1h", "--ttl", help="How long it stays valid: 30m, 1h, 2d "
                                  "(1 min to 7 days)"),
          data_dir: Path = DataDirOpt) -> None:
    """Print a one-time token a new host joins this cluster with.

    On the new host (corral installed, `make` done there):

        corral agent join https://ENGINE:8443 --token TOKEN

    The token names this engine's CA fingerprint, which the host checks before it trusts
    the engine; it works once, until it expires, and is kept only hashed."""
    with handled(), client(data_dir) as c:
        made = c.create_join_token(_ttl_seconds(ttl))
        typer.echo(made.token)  # plain: a console would wrap it
        err.print(f"valid until {made.expires_at:%Y-%m-%d %H:%M:%S} UTC, once; "
                          f"CA fingerprint {made.ca_fingerprint}")
