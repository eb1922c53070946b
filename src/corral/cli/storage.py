"""`corral storage pool ...` and `corral volume ...`: storage pools and their volumes;
`corral vm disk ...`: volumes attached to VMs (hot-plug)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import typer
from pydantic import BaseModel

from corral.api import DiskAttach, Pool, PoolCreate, Volume, VolumeCreate
from corral.api.storage import split_volume
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    WaitOpt,
    build,
    client,
    emit,
    follow,
    handled,
    human_bytes,
    show_one,
)
from corral.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)

app = typer.Typer(help="Storage pools: dir, shared (NFS-style) and Ceph RBD.",
                  no_args_is_help=True)
pool_app = typer.Typer(help="Create, list, show and delete storage pools.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
volume_app = typer.Typer(help="Volumes of storage pools (POOL/NAME): thin qcow2 or raw files, "
                         "or RBD images.", no_args_is_help=True)
disk_app = typer.Typer(help="A VM's disks: attach and detach volumes, grow the root disk (live "
                       "when running).",
                       no_args_is_help=True)


def _bytes(n: int | None) -> str:
    return "-" if n is None else human_bytes(n)


POOL_COLUMNS = [
    ("NAME", lambda p: p.name), ("TYPE", lambda p: p.type.value), ("STATUS", lambda p: p.status),
    ("CAPACITY", lambda p: _bytes(p.capacity)), ("ALLOCATION", lambda p: _bytes(p.allocation)),
    ("FREE", lambda p: _bytes(p.available)), ("VOLUMES", lambda p: p.volumes),
    ("LOCATION", lambda p: p.path or f"{p.ceph_pool} ({p.ceph_conf})"),
]
VOLUME_COLUMNS = [
    ("VOLUME", lambda v: f"{v.pool}/{v.name}"), ("FORMAT", lambda v: v.format.value),
    ("SIZE", lambda v: human_bytes(v.size)), ("ALLOCATION", lambda v: _bytes(v.allocation)),
    ("STATUS", lambda v: v.status), ("VM", lambda v: f"{v.vm} ({v.target})" if v.vm else "-"),
]
DISK_COLUMNS = [
    ("TARGET", lambda d: d.target), ("BUS", lambda d: d.bus), ("KIND", lambda d: d.kind),
    ("VOLUME", lambda d: d.volume or "-"), ("FORMAT", lambda d: d.format),
    ("SIZE", lambda d: _bytes(d.size)), ("SOURCE", lambda d: d.source),
]


def _ref(value: str) -> tuple[str, str]:
    try:
        return split_volume(value)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="volume") from None


# -- pools ---------------------------------------------------------------------------------

@pool_app.command("create")
def pool_create(
    name: str = typer.Argument(..., help="Pool name: letters, digits, '-' and '_'"),
    type: str = typer.Option("dir", "--type", "-t", help="dir, shared or rbd"),
    path: str = typer.Option(None, "--path", help="dir: directory (default DATA/agent/storage/"
                             "pools/NAME); shared: where every host mounts the shared storage"),
    ceph_conf: str = typer.Option(None, "--ceph-conf", help="rbd: ceph.conf on the hosts "
                                  "(default /etc/ceph/ceph.conf)"),
    ceph_pool: str = typer.Option(None, "--ceph-pool", help="rbd: the Ceph pool of the images"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create a storage pool: a directory of this host, a shared directory or a Ceph RBD pool."""
    with handled():
        req = build(PoolCreate, name=name, type=type, path=path, ceph_conf=ceph_conf,
                       ceph_pool=ceph_pool)
        with client(data_dir) as c:
            follow(c, c.create_pool(req), f"create pool {name}", wait, output)


@pool_app.command("list")
def pool_list(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """List pools with their capacity, allocation and free space."""
    with handled(), client(data_dir) as c:
        emit(c.list_pools(), output, POOL_COLUMNS)


@pool_app.command("show")
def pool_show(name: str, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Show one pool."""
    with handled(), client(data_dir) as c:
        pool: Pool = c.get_pool(name)
        show_one(pool, output, 12)


@pool_app.command("delete")
def pool_delete(name: str, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
                data_dir: Path = DataDirOpt) -> None:
    """Delete an empty pool (refused while it holds volumes). Data is never removed: a dir
    pool's directory goes only if corral made it and it is empty."""
    with handled(), client(data_dir) as c:
        follow(c, c.delete_pool(name), f"delete pool {name}", wait, output)


# -- volumes -------------------------------------------------------------------------------

@volume_app.command("create")
def volume_create(
    volume: str = typer.Argument(..., help="POOL/NAME"),
    size: str = typer.Option(..., "--size", "-s", help="e.g. 10G (a number alone is GiB)"),
    format: str = typer.Option(None, "--format", "-f", help="qcow2 or raw (default: qcow2, "
                               "raw in rbd pools)"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create a thin volume (refused when it would not fit in the pool's free space)."""
    with handled():
        pool, name = _ref(volume)
        req = build(VolumeCreate, name=name, size=size, format=format)
        with client(data_dir) as c:
            follow(c, c.create_volume(pool, req), f"create volume {volume}", wait, output)


@volume_app.command("list")
def volume_list(pool: str = typer.Argument(None, help="Only this pool's volumes"),
                output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """List volumes: size, space written, and the VM each is attached to."""
    with handled(), client(data_dir) as c:
        emit(c.list_volumes(pool), output, VOLUME_COLUMNS)


@volume_app.command("show")
def volume_show(volume: str = typer.Argument(..., help="POOL/NAME"),
                output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Show one volume."""
    with handled():
        pool, name = _ref(volume)
        with client(data_dir) as c:
            vol: Volume = c.get_volume(pool, name)
            show_one(vol, output, 12)


@volume_app.command("resize")
def volume_resize(
    volume: str = typer.Argument(..., help="POOL/NAME"),
    size: str = typer.Option(..., "--size", "-s", help="The new size, e.g. 20G (only grows)"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Grow a volume; one attached to a running VM grows live (the guest sees it)."""
    with handled():
        pool, name = _ref(volume)
        with client(data_dir) as c:
            follow(c, c.resize_volume(pool, name, size), f"resize volume {volume}", wait, output)


@volume_app.command("delete")
def volume_delete(volume: str = typer.Argument(..., help="POOL/NAME"), wait: bool = WaitOpt,
                  output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Delete a volume and its data (refused while it is attached to a VM)."""
    with handled():
        pool, name = _ref(volume)
        with client(data_dir) as c:
            follow(c, c.delete_volume(pool, name), f"delete volume {volume}", wait, output)


# -- disks of VMs --------------------------------------------------------------------------

@disk_app.command("attach")
def disk_attach(
    vm: str = typer.Argument(..., help="VM name"),
    volume: str = typer.Option(..., "--volume", help="POOL/NAME"),
    bus: str = typer.Option("virtio", "--bus", help="virtio, scsi or sata (sata only on a "
                            "stopped VM: it cannot be hot-plugged)"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Attach a volume to a VM; a running VM gets it at once (hot-plug)."""
    with handled():
        req = build(DiskAttach, volume=volume, bus=bus)
        with client(data_dir) as c:
            follow(c, c.attach_disk(vm, req.volume, req.bus.value),
                   f"attach {volume} to VM {vm}", wait, output)


@disk_app.command("detach")
def disk_detach(
    vm: str = typer.Argument(..., help="VM name"),
    volume: str = typer.Option(..., "--volume", help="POOL/NAME"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Detach a volume from a VM (a running guest releases it first); the volume stays."""
    with handled():
        _ref(volume)
        with client(data_dir) as c:
            follow(c, c.detach_disk(vm, volume), f"detach {volume} from VM {vm}", wait, output)


@disk_app.command("resize")
def disk_resize(
    vm: str = typer.Argument(..., help="VM name"),
    disk: str = typer.Argument(..., help="root, or an attached volume POOL/NAME"),
    size: str = typer.Option(..., "--size", "-s", help="The new size, e.g. 20G (only grows)"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Grow a VM's disk: live on a running VM (the guest sees the new size at once), else
    on its host. Growing the partition and file system inside is the guest's business
    (cloud-init's growpart does it at boot).

    Example: corral vm disk resize web root --size 20G
    """
    with handled(), client(data_dir) as c:
        if disk == "root":
            op = c.resize_root_disk(vm, size)
        else:
            if "/" not in disk:
                raise InvalidInput(f"disk {disk!r}: give root or an attached volume "
                                   "POOL/NAME (see `corral vm disk list VM`)", field="disk")
            pool, name = _ref(disk)
            op = c.resize_volume(pool, name, size)
        follow(c, op, f"resize disk {disk} of VM {vm}", wait, output)


@disk_app.command("list")
def disk_list(vm: str = typer.Argument(..., help="VM name"), output: OutputFormat = OutputOpt,
              data_dir: Path = DataDirOpt) -> None:
    """A VM's disks: root disk, cloud-init seed and attached volumes."""
    with handled(), client(data_dir) as c:
        emit(c.list_vm_disks(vm), output, DISK_COLUMNS)
