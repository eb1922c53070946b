"""`corral up`, `down`, `status`, `events`, `operation`: the node itself."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, client, emit, err, handled, out
from corral.node.paths import default_data_dir


def up(
    data_dir: Path = DataDirOpt,
    listen: str = typer.Option("0.0.0.0", "--listen", help="Address of the HTTPS API"),
    port: int = typer.Option(8443, "--port", help="API port (the local agent uses PORT+1)"),
    subnet: str = typer.Option("10.210.0.0/24", "--subnet", help="Subnet of the default network"),
    libvirt_uri: str = typer.Option("qemu:///system", "--libvirt-uri"),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background"),
) -> None:
    """Start corral on this host: engine (HTTPS API) + local agent; libvirtd if none runs."""
    from corral.node import up as node_up  # the engine's imports are heavy: only here

    opts = node_up.UpOptions(data_dir=data_dir or default_data_dir(), listen=listen, port=port,
                             subnet=subnet, libvirt_uri=libvirt_uri)
    with handled():
        if detach:
            node_up.start_detached(opts)
            out.print(f"corral is up (data dir {opts.data_dir}, API https://{listen}:{port}); "
                      "`corral status` shows it, `corral down` stops it")
        else:
            node_up.run_up(opts)


def down(data_dir: Path = DataDirOpt) -> None:
    """Stop what `corral up --detach` started (VMs keep running)."""
    from corral.node import up as node_up

    d = data_dir or default_data_dir()
    if node_up.stop(d):
        out.print(f"corral stopped ({d})")
    else:
        err.print(f"corral was not running from {d}")


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


operation_app = typer.Typer(help="Inspect operations (long-running work).", no_args_is_help=True)

OP_COLUMNS = [
    ("ID", lambda o: o.id), ("TYPE", lambda o: o.type), ("STATUS", lambda o: o.status.value),
    ("PROGRESS", lambda o: f"{o.progress}%"),
    ("RESOURCES", lambda o: ",".join(n for v in o.resources.values() for n in v)),
    ("MESSAGE", lambda o: o.message or ""),
]


@operation_app.command("list")
def op_list(limit: int = typer.Option(20, "--limit"), output: OutputFormat = OutputOpt,
            data_dir: Path = DataDirOpt) -> None:
    """Recent operations, newest first."""
    with handled(), client(data_dir) as c:
        emit(c.list_operations(limit), output, OP_COLUMNS)


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
