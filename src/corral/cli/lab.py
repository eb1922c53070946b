"""`corral lab ...`: a multi-host cluster on this one machine, to try and to test with."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import typer

from corral.cli.output import OutputFormat, OutputOpt, err, handled, out

app = typer.Typer(
    help="A cluster on this one machine: an engine of its own and lab hosts (network + mount "
         "namespaces, each with its own libvirtd and a corral agent that joined with a token). "
         "Never touches the node of `corral up`. Needs root.\n\n"
         "Example: corral lab up --hosts 3; corral host list; "
         "corral lab fault lab2 power-off; corral lab down",
    no_args_is_help=True)

RootOpt = typer.Option(None, "--root", envvar="CORRAL_LAB_ROOT",
                       help="The lab's directory: state file, engine data, lab hosts "
                            "(default /var/lib/corral-lab)")


def _lab(root: Path | None):  # type: ignore[no-untyped-def]
    from corral.lab.cluster import Lab  # heavy imports only when a lab command runs

    return Lab(root)


@app.command("up")
def up(
    hosts: int = typer.Option(2, "--hosts", "-n", min=1, max=99, help="How many lab hosts"),
    storage: str = typer.Option(
        "none", "--storage", metavar="none|shared|rbd",
        help="shared: a directory every lab host sees, as storage pool `shared`; rbd: a "
             "small Ceph cluster (mon, mgr, 3 OSDs) as storage pool `rbd`. VMs on either can "
             "move between hosts without copying their disks"),
    prefix: str = typer.Option(
        "lab", "--prefix", help="Names of the lab: hosts PREFIX1, PREFIX2...; namespaces "
                                "corral-PREFIXn (1-5 letters)"),
    remote: bool = typer.Option(True, "--remote/--no-remote",
                                help="Add remote `lab` and switch the CLI to it"),
    heartbeat_timeout: float | None = typer.Option(
        None, "--heartbeat-timeout", min=0.5, max=600.0,
        help="The engine's `corral up --heartbeat-timeout`: seconds of agent silence before "
             "a host is unresponsive (default: the engine's, 5)"),
    cpu_overcommit: float | None = typer.Option(
        None, "--cpu-overcommit", min=0.1, max=1000.0,
        help="The engine's `corral up --cpu-overcommit`: vCPUs a host may be given per CPU "
             "(default: the engine's, 4). Every lab host shows this machine's CPUs: raise it "
             "to place more small VMs on each"),
    image: bool = typer.Option(
        True, "--image/--no-image",
        help="Build image `tiny` (a small guest with a shell on its console) on the first "
             "host; VMs on other hosts get it copied. Its .debs are downloaded here (the lab "
             "hosts have no route to the mirror) unless --deb-cache has them"),
    deb_cache: Path = typer.Option(
        None, "--deb-cache", file_okay=False,
        help="A directory with the tiny guest's .debs in debs/ (filled on first use, reused "
             "after; default ROOT/tiny-cache, gone with `lab down`)"),
    fence: bool = typer.Option(
        True, "--fence/--no-fence",
        help="Give every host the fence method fence_corral_lab (the lab's power-off and "
             "power-on of it), so HA can fence a lost host; --no-fence: none"),
    quorum: bool | None = typer.Option(
        None, "--quorum/--no-quorum", show_default=False,
        help="Run corosync (votequorum over knet) in every lab host, all lab hosts in its "
             "nodelist (add-host adds them): the membership the agents report for HA. "
             "Default: with 3 hosts or more. With 2 hosts --quorum sets two_node, and a "
             "partition leaves both halves quorate: HA then relies on power fencing "
             "(docs/ha.md \"Quorum (corosync)\")"),
    root: Path = RootOpt,
) -> None:
    """Start the lab's engine and N lab hosts; returns when every host is `up`, with
    network `default` spanning the hosts (VXLAN, 10.212.0.0/24, isolated: guests reach
    each other, nothing beyond the lab; a VM keeps its address on any host) and image
    `tiny`.

    The CLI then talks to the lab (remote `lab`; `corral remote switch local` goes back).
    """
    with handled():
        lab = _lab(root)
        st = lab.up(hosts, storage, prefix, remote=remote, heartbeat_timeout=heartbeat_timeout,
                    cpu_overcommit=cpu_overcommit,
                    image=image, deb_cache=deb_cache, fence=fence, quorum=quorum)
        assert st.engine is not None
        out.print(f"lab up: engine https://{st.engine.address}:{st.engine.port}, hosts "
                  f"{', '.join(sorted(st.hosts))}", highlight=False)
        if st.remote:
            out.print(f"the CLI now talks to the lab (remote {st.remote!r}); "
                      f"`corral lab down` removes it all", highlight=False)
        else:
            out.print(f"talk to it with CORRAL_DATA_DIR={st.engine.data_dir}", highlight=False)


@app.command("add-host")
def add_host(
    name: str = typer.Option(None, "--name", help="PREFIX<number> (default: the next number)"),
    root: Path = RootOpt,
) -> None:
    """Add one more lab host to the running lab; it joins with a new token."""
    with handled():
        rec = _lab(root).add_host(name)
        out.print(f"lab host {rec.name} joined ({rec.address})", highlight=False)


@app.command("remove-host")
def remove_host(
    name: str = typer.Argument(..., help="Lab host name (`corral lab status`)"),
    root: Path = RootOpt,
) -> None:
    """Remove a lab host: `corral host remove` in the lab's engine (refused while VMs are
    defined on it), then its namespaces and processes go; with quorum, the other hosts'
    corosync.conf lose it and corosync reloads it.

    Example: corral lab remove-host lab4
    """
    with handled():
        out.print(_lab(root).remove_host(name), highlight=False)


@app.command("status")
def status(output: OutputFormat = OutputOpt, root: Path = RootOpt) -> None:
    """The lab's engine and hosts: state as the engine sees it, power, network, pids."""
    with handled():
        st = _lab(root).status()
        if output == OutputFormat.JSON:
            print(json.dumps(asdict(st), indent=2))
            return
        out.print(f"lab {st.prefix!r} at {st.root}, storage {st.storage}", highlight=False)
        out.print(f"engine {st.engine_url or '-'} (pid {st.engine_pid or 'not running'})",
                  highlight=False)
        out.print(f"{'HOST':<8} {'ADDRESS':<15} {'ENGINE SEES':<13} {'POWER':<6} "
                  f"{'NETWORK':<8} {'LIBVIRTD':<9} AGENT", highlight=False)
        for h in st.hosts:
            out.print(f"{h.name:<8} {h.address:<15} {h.engine_status:<13} "
                      f"{'on' if h.powered else 'off':<6} {h.network:<8} "
                      f"{h.libvirtd_pid or '-'!s:<9} {h.agent_pid or '-'}", highlight=False)


@app.command("fault")
def fault(
    host: str = typer.Argument(..., help="Lab host name (`corral lab status`)"),
    action: str = typer.Argument(
        ..., metavar="power-off|power-on|power-cycle|cut-network|heal|kill-agent|kill-libvirtd",
        help="power-off: SIGKILL every process of the host at once, its QEMUs included (a "
             "power loss; disks stay). power-on: start libvirtd and the agent again (it "
             "rejoins with the identity saved at its join). power-cycle: both (a reboot: what "
             "`corral host reboot` does to a lab host). cut-network: drop all the host's "
             "traffic both ways, everything keeps running; heal: undo it. kill-agent: "
             "SIGKILL the agent (its lease guard starts it again within seconds). "
             "kill-libvirtd: SIGKILL that daemon (power-on starts it again)"),
    wait: bool = typer.Option(True, "--wait/--no-wait",
                              help="power-on: wait until the engine sees the host `up`"),
    from_host: bool = typer.Option(False, "--from-host", hidden=True,
                                   help="Run from inside the lab host itself (its agent's "
                                   "power command): go outside first"),
    root: Path = RootOpt,
) -> None:
    """Inject a fault into a lab host.

    Example: corral lab fault lab2 power-off
    """
    with handled():
        if from_host:  # not inside what power-off kills: re-run in the engine's namespaces
            _lab(root).leave_host([a for a in sys.argv if a != "--from-host"])
        out.print(_lab(root).fault(host, action, wait=wait), highlight=False)


@app.command("engine")
def engine(
    action: str = typer.Argument(
        ..., metavar="stop|start",
        help="stop: SIGTERM the lab's engine (as `corral down`; SIGKILL after 30 s): the lab "
             "hosts, their agents and VMs keep running without it. start: run it again with "
             "the options `lab up` gave it; returns once its API answers"),
    root: Path = RootOpt,
) -> None:
    """Stop or start the lab's engine: an engine outage, to see what keeps running.

    Example: corral lab engine stop; sleep 60; corral lab engine start
    """
    with handled():
        out.print(_lab(root).engine(action), highlight=False)


@app.command("down")
def down(
    prefix: str = typer.Option(None, "--prefix",
                               help="Sweep this lab's names although no state file is left"),
    root: Path = RootOpt,
) -> None:
    """Remove every trace of the lab: processes (QEMU included), namespaces, veths, nftables
    tables, its directory, remote `lab` (the CLI switches back). Works after a crash too."""
    with handled():
        left = _lab(root).down(prefix)
        if left:
            err.print(f"lab down: could not remove {', '.join(left)}", highlight=False)
            raise typer.Exit(1)
        out.print("lab down: nothing of it is left", highlight=False)
