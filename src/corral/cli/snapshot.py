"""`corral vm snapshot ...`, `corral vm clone` and `corral template ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape

from corral.api.snapshots import (
    CloneMode,
    OvaImport,
    Snapshot,
    SnapshotCreate,
    TemplateCreate,
    VmClone,
)
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    WaitOpt,
    client,
    emit,
    follow,
    handled,
    out,
)
from corral.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


def _req(model: type[M], **fields: Any) -> M:
    """Build a request; a bad field is a clear InvalidInput naming it (exit 2)."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else None
        raise InvalidInput(str(first["msg"]).removeprefix("Value error, "), field=field) from None

app = typer.Typer(help="Snapshots of a VM (disk, or disk and memory), kept as a tree.",
                  no_args_is_help=True)
template_app = typer.Typer(help="Templates: images made from a VM's disk.", no_args_is_help=True)


@app.command("create")
def create(
    vm: str = typer.Argument(..., help="VM name"),
    name: str = typer.Argument(..., help="Snapshot name"),
    memory: bool = typer.Option(False, "--memory", help="Save memory too (a running VM): "
                                "reverting resumes it where it was"),
    quiesce: bool = typer.Option(False, "--quiesce", help="Freeze the guest's file systems "
                                 "around the snapshot (needs the QEMU guest agent)"),
    description: str = typer.Option(None, "--description", help="Free text"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Take a snapshot of a VM, live: disk only, or disk and memory (--memory)."""
    with handled(), client(data_dir) as c:
        req = _req(SnapshotCreate, name=name, memory=memory, quiesce=quiesce, description=description)
        follow(c, c.create_snapshot(vm, req), f"snapshot {name} of {vm}", wait, output)


def _tree(snaps: list[Snapshot]) -> list[tuple[int, Snapshot]]:
    """Depth-first order with depths: children under their parent, oldest first."""
    names = {s.name for s in snaps}
    children: dict[str | None, list[Snapshot]] = {}
    for s in snaps:
        children.setdefault(s.parent if s.parent in names else None, []).append(s)
    rows: list[tuple[int, Snapshot]] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            rows.append((depth, s))
            walk(s.name, depth + 1)

    walk(None, 0)
    return rows


@app.command("list")
def list_snapshots(vm: str = typer.Argument(..., help="VM name"),
                   output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The VM's snapshot tree (* marks the current one)."""
    with handled(), client(data_dir) as c:
        snaps = c.list_snapshots(vm)
    if output == OutputFormat.JSON:
        print("[" + ",\n".join(s.model_dump_json(indent=2) for s in snaps) + "]")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("NAME", "STATE", "MEMORY", "CREATED", "DESCRIPTION"):
        table.add_column(col)
    for depth, s in _tree(snaps):
        mark = "* " if s.current else "  "
        branch = ("  " * (depth - 1) + "└─ ") if depth else ""
        table.add_row(escape(f"{mark}{branch}{s.name}"), s.state, "yes" if s.memory else "no",
                      s.created_at.strftime("%Y-%m-%d %H:%M:%S"), escape(s.description or ""))
    out.print(table)


@app.command("revert")
def revert(vm: str = typer.Argument(..., help="VM name"),
           name: str = typer.Argument(..., help="Snapshot name"),
           wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
           data_dir: Path = DataDirOpt) -> None:
    """Revert the VM to a snapshot: its disk, and its memory (it resumes where it was)."""
    with handled(), client(data_dir) as c:
        follow(c, c.revert_snapshot(vm, name), f"revert {vm} to {name}", wait, output)


@app.command("delete")
def delete(vm: str = typer.Argument(..., help="VM name"),
           name: str = typer.Argument(..., help="Snapshot name"),
           wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
           data_dir: Path = DataDirOpt) -> None:
    """Delete a snapshot; its children stay valid (re-parented to its parent)."""
    with handled(), client(data_dir) as c:
        follow(c, c.delete_snapshot(vm, name), f"delete snapshot {name} of {vm}", wait, output)


def clone(
    source: str = typer.Argument(..., help="VM to clone (stopped, unless --from-snapshot)"),
    name: str = typer.Argument(..., help="Name of the new VM"),
    linked: bool = typer.Option(None, "--linked/--full", help="Linked: an O(1) qcow2 overlay "
                                "(the default); full: an independent copy, with progress"),
    from_snapshot: str = typer.Option(None, "--from-snapshot", help="Copy the disk as it was "
                                      "in this snapshot (a full clone)"),
    start: bool = typer.Option(False, "--start", help="Start the clone once made"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Clone a VM: same CPUs, memory, network and cloud-init settings, a new MAC."""
    mode = None if linked is None else (CloneMode.LINKED if linked else CloneMode.FULL)
    with handled(), client(data_dir) as c:
        req = _req(VmClone, name=name, mode=mode, snapshot=from_snapshot, start=start)
        follow(c, c.clone_vm(source, req), f"clone {source} as {name}", wait, output)


@template_app.command("create")
def template_create(
    name: str = typer.Argument(..., help="Template (image) name"),
    from_vm: str = typer.Option(..., "--from-vm", help="Stopped VM whose disk is flattened"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Make a template (an image) from a stopped VM's disk; then
    `corral vm create NEW --template NAME` (add --pool RBD_POOL: an RBD clone of it)."""
    with handled(), client(data_dir) as c:
        op = c.create_template(_req(TemplateCreate, name=name, vm=from_vm))
        follow(c, op, f"template {name} from VM {from_vm}", wait, output)


@template_app.command("list")
def template_list(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """List templates (images made from VMs) and the VM each was made from."""
    from corral.cli.image import COLUMNS

    with handled(), client(data_dir) as c:
        emit(c.list_templates(), output,
             [*COLUMNS[:2], ("FROM VM", lambda i: i.template_vm or "-"), *COLUMNS[3:5]])


@template_app.command("delete")
def template_delete(name: str, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
                    data_dir: Path = DataDirOpt) -> None:
    """Delete a template (refused while VMs use it)."""
    with handled(), client(data_dir) as c:
        follow(c, c.delete_template(name), f"delete template {name}", wait, output)


def export(
    vm: str = typer.Argument(..., help="Stopped VM to export"),
    ova: Path = typer.Option(..., "--ova", help="OVA file to write (on this node's machine)"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Export a stopped VM as an OVA: OVF 1.0 descriptor, manifest, and a streamOptimized
    VMDK for the root disk and each attached volume (dir and shared pools)."""
    with handled(), client(data_dir) as c:
        follow(c, c.export_ova(vm, str(ova.absolute())), f"export {vm} to {ova}", wait, output)


def import_ova(
    file: Path = typer.Argument(..., help="OVA file (on this node's machine)"),
    name: str = typer.Option(None, "--name", help="VM name (default: the descriptor's)"),
    network: str = typer.Option("default", "--network", help="Network for the first NIC"),
    start: bool = typer.Option(False, "--start", help="Start the VM once imported"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Import an OVA: CPUs, memory and MAC from its OVF descriptor; its first disk is
    converted to qcow2 (image NAME-ova) and the VM made as a linked clone of it; every other
    disk becomes volume default/NAME-diskN, attached in the descriptor's order."""
    with handled(), client(data_dir) as c:
        req = _req(OvaImport, file=str(file.absolute()), name=name, network=network,
                   start=start)
        follow(c, c.import_ova(req), f"import {file}", wait, output)
