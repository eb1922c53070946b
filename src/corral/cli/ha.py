"""`corral ha status`: high availability's view of the cluster."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.api.ha import HaStatus
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, client, emit, handled, out

app = typer.Typer(help="High availability: lost hosts, fencing, and HA VMs brought back on "
                  "other hosts (`corral vm create --ha`, `corral host fence set`).",
                  no_args_is_help=True)


def _print(st: HaStatus) -> None:
    out.print(f"a host is lost after {st.detect_s:g} s of silence (ha.detect_s); "
              f"lease {st.lease_s:g} s (ha.lease_s)", highlight=False)
    out.print()
    emit(st.hosts, OutputFormat.TABLE, [
        ("HOST", lambda h: h.name),
        ("HA STATE", lambda h: h.state),
        ("FENCE", lambda h: h.fence if h.fence_configured else "no method"),
        ("QUORUM", lambda h: h.quorum), ("LEASE", lambda h: h.lease)])
    out.print()
    if not st.vms:
        out.print("no HA VMs (`corral vm set NAME --ha`)", highlight=False)
        return
    emit(st.vms, OutputFormat.TABLE, [
        ("VM", lambda v: v.name), ("PRIORITY", lambda v: str(v.priority)),
        ("HOST", lambda v: v.host or "-"),
        ("STATUS", lambda v: "recovering" if v.recovering else
         (f"waiting: {v.waiting}" if v.waiting else
          ("ok" if v.wants_running else "stopped (wanted so)")))])


@app.command("status")
def status(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Each host's HA state (up, or lost: being fenced, fenced, or why its VMs wait) and
    each HA VM with its host and priority, highest first: where a VM waits, why.

    Example: corral ha status
    """
    with handled(), client(data_dir) as c:
        st = c.ha_status()
        if output == OutputFormat.JSON:
            emit(st, output, [])
            return
        _print(st)


@app.command("corosync-conf")
def corosync_conf(
    cluster_name: str = typer.Option("corral", "--cluster-name",
                                     help="corosync's cluster_name (1-32 letters, digits, "
                                     "'-', '_')"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Print the corosync.conf of the cluster's hosts: the same file for every host.

    Put it at /etc/corosync/corosync.conf on each host, with the same /etc/corosync/authkey
    on all (`corosync-keygen` on one, then copy it: knet is encrypted), start corosync, and
    run the agents with `--quorum auto` (the default): they report the membership, and HA
    trusts it (docs/ha.md "Quorum (corosync)"). Print it again after a host joins or is
    removed, replace the file everywhere and run `corosync-cfgtool -R` on one host.

    Example: corral ha corosync-conf > corosync.conf
    """
    with handled(), client(data_dir) as c:
        conf = c.corosync_conf(cluster_name)
        if output == OutputFormat.JSON:
            emit(conf, output, [])
            return
        print(conf.text, end="")
