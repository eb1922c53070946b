"""`corral up`, `down`, `status`, `events`, `operation`: the node itself."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from corral.api import OperationStatus
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, client, emit, err, handled, out
from corral.errors import InvalidInput
from corral.node.paths import NodePaths, default_data_dir


def up(
    data_dir: Path = DataDirOpt,
    listen: str = typer.Option("0.0.0.0", "--listen", help="Address of the HTTPS API"),
    port: int = typer.Option(8443, "--port", help="API port (the local agent uses PORT+1)"),
    subnet: str = typer.Option(
        "10.210.0.0/24", "--subnet",
        help="Subnet of the default network, chosen at the node's first start. A second node "
             "on this machine needs its own (and its own --bridge, --port)"),
    bridge: str = typer.Option(
        "corral0", "--bridge",
        help="Linux bridge of the default network, chosen at the node's first start; one "
             "per node on a machine (e.g. corral1 with --subnet 10.211.0.0/24)"),
    libvirt_uri: str = typer.Option("qemu:///system", "--libvirt-uri"),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background"),
    import_dir: list[Path] | None = typer.Option(
        None, "--import-dir",
        help="Another directory `image import` and `vm import-ova` may read local files from "
             "(repeat it); DATA_DIR/import always is one. corral's own directories, storage "
             "pools and /etc, /proc, /sys, /dev never are"),
    import_allow_cidr: list[str] | None = typer.Option(
        None, "--import-allow-cidr",
        help="A range import URLs may reach although it is loopback, link-local or this "
             "host's (refused by default), e.g. 127.0.0.0/8 for a mirror on this host "
             "(repeat it)"),
    storage_overcommit: float = typer.Option(
        1.0, "--storage-overcommit", min=1.0, max=100.0,
        help="Thin provisioning: a new disk's size may be this many times its pool's free "
             "space (1: every disk must fit as if fully written)"),
    cpu_overcommit: float = typer.Option(
        4.0, "--cpu-overcommit", min=0.1, max=1000.0,
        help="The scheduler gives a host up to this many vCPUs per CPU it has (Nova's 4.0)"),
    memory_overcommit: float = typer.Option(
        1.0, "--memory-overcommit", min=0.1, max=1000.0,
        help="The scheduler gives a host up to this many times its memory (1: VMs' memory "
             "must fit; above 1 counts on KSM and balloons)"),
    placement: str = typer.Option(
        "spread", "--placement", metavar="spread|pack",
        help="Where new VMs go: spread (the host with most free first: load evens out) or "
             "pack (the fullest host that fits: whole hosts stay free for big VMs)"),
    heartbeat_timeout: float = typer.Option(
        5.0, "--heartbeat-timeout", min=0.5, max=600.0,
        help="Seconds without a report from a host's agent (it reports every second) before "
             "the engine marks the host unresponsive, which HA fences on; too low and a "
             "loaded machine's late heartbeats fence healthy hosts"),
    audit_retention: int = typer.Option(
        365, "--audit-retention", min=0, max=36500, metavar="DAYS",
        help="Days the audit log keeps its records (`corral audit list`); older ones are "
             "pruned hourly, and `corral audit verify` checks the chain from the oldest "
             "kept. 0: keep them forever"),
    local_agent: bool = typer.Option(
        True, "--local-agent/--no-local-agent",
        help="Run VMs on this machine too (an agent that joins the engine at once); "
             "--no-local-agent: the engine alone, hosts join it (`corral host token`)"),
    admin_password_file: Path | None = typer.Option(
        None, "--admin-password-file", metavar="FILE",
        help="On first start, the password of the user `admin` (the file's first line, 8 "
             "characters or more); without it a random one is made and logged once"),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", metavar="FILE",
        help="A certificate (PEM; its chain after it) from your CA for this engine's DNS "
             "name(s): shown to clients that ask for one of its names (browsers, `corral "
             "remote add --system-ca`); agents and https://IP clients keep corral's own. "
             "Default: the one `corral cert set` kept, if any"),
    tls_key: Path | None = typer.Option(
        None, "--tls-key", metavar="FILE",
        help="The private key of --tls-cert (PEM, without a passphrase)"),
) -> None:
    """Start corral on this host: engine (HTTPS API) + local agent; libvirtd if none runs."""
    from corral.agent_api.networks import validate_bridge_name
    from corral.node import up as node_up  # the engine's imports are heavy: only here
    from corral.safeurls import parse_cidrs

    opts = node_up.UpOptions(data_dir=data_dir or default_data_dir(), listen=listen, port=port,
                             subnet=subnet, libvirt_uri=libvirt_uri, bridge=bridge,
                             import_dirs=tuple(p.absolute() for p in import_dir or ()),
                             import_allow_cidrs=tuple(import_allow_cidr or ()),
                             storage_overcommit=storage_overcommit,
                             cpu_overcommit=cpu_overcommit,
                             memory_overcommit=memory_overcommit, placement=placement,
                             heartbeat_timeout_s=heartbeat_timeout, local_agent=local_agent,
                             audit_retention_days=audit_retention,
                             admin_password_file=admin_password_file.absolute()
                             if admin_password_file else None,
                             tls_cert=tls_cert.absolute() if tls_cert else None,
                             tls_key=tls_key.absolute() if tls_key else None)
    with handled():
        if placement not in ("spread", "pack"):
            raise InvalidInput(f"--placement is spread or pack, not {placement!r}",
                               field="placement")
        validate_bridge_name(bridge)  # before anything starts
        parse_cidrs(opts.import_allow_cidrs)
        if opts.admin_password_file:
            node_up.read_password_file(opts.admin_password_file)  # before anything starts
        opts.brought()  # readable, key and certificate match, not expired: before it starts
        if detach:
            first = not NodePaths(opts.data_dir).client_config.exists()
            node_up.start_detached(opts)
            out.print(f"corral is up (data dir {opts.data_dir}, API https://{listen}:{port}); "
                      "`corral status` shows it, `corral down` stops it")
            if first and not opts.admin_password_file:
                out.print(f"user admin's password is in {NodePaths(opts.data_dir).log} "
                          "(shown once there): `corral login` with it")
        else:
            node_up.run_up(opts)


def down(
    data_dir: Path = DataDirOpt,
    purge: bool = typer.Option(
        False, "--purge",
        help="Also remove what this node made on the host: its networks' bridges, dnsmasq "
             "and nftables rules. Refused while the node has VMs (see --force); the data dir "
             "stays"),
    force: bool = typer.Option(
        False, "--force",
        help="With --purge: first delete the node's VMs and their disks (the engine must run: "
             "`corral up --detach`)"),
    libvirt_uri: str = typer.Option(
        "qemu:///system", "--libvirt-uri",
        help="With --purge: where to look for VMs of this node when the engine is stopped"),
) -> None:
    """Stop what `corral up` started; VMs keep running, and so do the networks they use.

    `--purge` also removes the node's networks from the host: bridges, dnsmasq, nftables.

    Nothing is done while the node has VMs; `--purge --force` deletes them first.

    `rm -rf DATA_DIR` afterwards forgets the node (its images, disks and database).
    """
    from corral.node import up as node_up

    d = data_dir or default_data_dir()
    if purge:
        _purge(d, force, libvirt_uri)
        return
    if force:
        err.print("--force only goes with --purge")
        raise typer.Exit(2)
    if node_up.stop(d):
        out.print(f"corral stopped ({d}); its networks stay for the VMs "
                  "(`corral down --purge` removes them)", highlight=False)
    else:
        err.print(f"corral was not running from {d}")


def _purge(data_dir: Path, force: bool, libvirt_uri: str) -> None:
    from corral.node import purge

    seams = purge.Seams(domains=lambda d: purge.node_domains(d, libvirt_uri))
    with handled():
        report = purge.purge(data_dir, force=force, seams=seams,
                             say=lambda line: out.print(line, highlight=False))
    if not report.stopped:
        out.print(f"corral was not running from {data_dir}", highlight=False)
    if not report.networks and not report.failed:
        out.print("no networks of this node were left on the host", highlight=False)
    out.print(f"the data dir {data_dir} is kept (images, disks, database); "
              f"`rm -rf {data_dir}` forgets the node", highlight=False)
    if report.failed:
        err.print(f"[bold red]Error[/]: {len(report.failed)} network(s) could not be removed; "
                  "`corral down --purge` tries again", highlight=False)
        raise typer.Exit(1)


def status(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Show the node: hosts, virtualization type (KVM or TCG), VM and image counts."""
    with handled(), client(data_dir) as c:
        st = c.status()
        if output == OutputFormat.JSON:
            print(st.model_dump_json(indent=2))
            return
        out.print(f"corral {st.version}  data dir {st.data_dir}")
        out.print(f"VMs: {st.vms} ({st.running_vms} running)   images: {st.images}")
        for h in st.hosts:
            virt = (h.virt_type or "?").replace("qemu", "TCG (qemu)")
            out.print(f"host {h.name}: {h.status}, {h.cpus} CPUs, {h.memory_mib} MiB, "
                      f"virtualization {virt}", highlight=False)
            if h.virt_note:
                out.print(f"  note: {h.virt_note}", highlight=False)
            for n in h.numa_nodes:  # placement: pinning, guest NUMA, huge pages
                pages = ", ".join(f"{p.size} {p.free}/{p.total} free" for p in n.hugepages)
                out.print(f"  NUMA node {n.id}: CPUs {n.cpus}, {n.memory_mib} MiB, huge pages "
                          f"{pages or 'none'}", highlight=False)


def events(
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events"),
    data_dir: Path = DataDirOpt,
) -> None:
    """Print events (operations, VM and host state changes) as JSON lines."""
    with handled(), client(data_dir) as c:
        if not follow_:
            for op in reversed(c.list_operations(20)):
                print(json.dumps({"type": "operation", "data": op.model_dump(mode="json")}))
            return
        try:
            for ev in c.events():
                print(ev.model_dump_json(), flush=True)
        except KeyboardInterrupt:
            pass


operation_app = typer.Typer(help="Inspect and cancel operations (long-running work).",
                            no_args_is_help=True)

OP_COLUMNS = [
    ("ID", lambda o: o.id), ("TYPE", lambda o: o.type), ("STATUS", lambda o: o.status.value),
    ("PROGRESS", lambda o: f"{o.progress}%"),
    ("RESOURCES", lambda o: ",".join(n for v in o.resources.values() for n in v)),
    ("MESSAGE", lambda o: o.message or ""),
]


@operation_app.command("list")
def op_list(
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    status: list[OperationStatus] = typer.Option(
        [], "--status", help="Only these (repeat for several)"),
    type_: str | None = typer.Option(None, "--type", help="Only this type, e.g. vm.create"),
    after: str | None = typer.Option(None, "--after", help="The page after this operation id"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Recent operations, newest first."""
    with handled(), client(data_dir) as c:
        ops = c.list_operations(limit, status=[st.value for st in status], type=type_,
                                after=after)
        emit(ops, output, OP_COLUMNS)


@operation_app.command("cancel")
def op_cancel(op_id: str, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Cancel an operation: a pending one is dropped, a running one (if its type allows
    it) stops at its next safe point and undoes what it did."""
    with handled(), client(data_dir) as c:
        op = c.cancel_operation(op_id)
        if output == OutputFormat.JSON:
            emit(op, output, OP_COLUMNS)
        elif op.status.done:
            out.print(f"operation {op.id} ({op.type}) {op.status.value}")
        else:
            out.print(f"operation {op.id} ({op.type}): cancel requested, it stops at its next "
                      f"safe point (`corral operation wait {op.id}`)", highlight=False)


@operation_app.command("show")
def op_show(op_id: str, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """One operation."""
    with handled(), client(data_dir) as c:
        emit(c.get_operation(op_id), output, OP_COLUMNS)


@operation_app.command("wait")
def op_wait(op_id: str, timeout: float = typer.Option(600, "--timeout"),
            output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Wait for an operation to finish."""
    with handled(), client(data_dir) as c:
        emit(c.wait(op_id, timeout), output, OP_COLUMNS)
