"""`corral image ...`: guest images."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from corral.api import ImageImport
from corral.cli.customize import image_customize, invalid
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    WaitOpt,
    client,
    emit,
    follow,
    handled,
    human_bytes,
)
from corral.cli.sharing import share_command

app = typer.Typer(help="Import, build and delete guest images.", no_args_is_help=True)

COLUMNS = [
    ("NAME", lambda i: i.name), ("STATUS", lambda i: i.status), ("FORMAT", lambda i: i.format),
    ("VIRTUAL SIZE", lambda i: human_bytes(i.virtual_size)),
    ("FILE SIZE", lambda i: human_bytes(i.file_size)),
    ("BOOT", lambda i: "kernel" if i.kernel else ("cdrom" if i.format == "iso" else "disk")),
]


@app.command("build-tiny")
def build_tiny(
    name: str = typer.Argument("tiny", help="Image name"),
    guest_agent: bool = typer.Option(False, "--guest-agent", help="Add qemu-guest-agent, "
                                     "started at boot (`vm exec`, graceful shutdown, "
                                     "addresses from the guest)"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Build the tiny test guest (Debian cloud kernel + busybox; boots in seconds, even on TCG).

    Downloads linux-image-cloud-amd64 and busybox-static (and with --guest-agent
    qemu-guest-agent and its libraries) with `apt-get download` into a build dir: nothing
    is installed on the host.
    """
    with handled(), client(data_dir) as c:
        follow(c, c.build_tiny(name, guest_agent=guest_agent), f"build image {name}", wait,
               output)


@app.command("import")
def import_image(
    name: str = typer.Argument(..., help="Image name"),
    source: str = typer.Argument(..., metavar="URL|FILE",
                                 help="http(s) URL (the host downloads it) or image file on the host"),
    format: str = typer.Option("auto", "--format",
                               help="auto, qcow2, raw, vmdk, vdi or iso (auto probes the file)"),
    checksum: str | None = typer.Option(None, "--checksum", metavar="sha256:HEX",
                                        help="Refuse the image unless its SHA-256 matches"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Import an image from a URL or a file, with progress.

    Downloads resume after a dropped connection. raw, vmdk and vdi images are converted to
    qcow2 (qemu-img convert); an ISO is kept as it is, as a CD-ROM for installs.
    A failed import leaves nothing behind.
    """
    with handled():
        if "://" not in source:
            source = str(Path(source).resolve())
        try:
            req = ImageImport(name=name, source=source, format=format, checksum=checksum)
        except ValidationError as exc:
            raise invalid(exc) from None
        with client(data_dir) as c:
            follow(c, c.import_image(req), f"import image {name}", wait, output)


app.command("customize")(image_customize)


@app.command("list")
def list_images(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """List images."""
    with handled(), client(data_dir) as c:
        emit(c.list_images(), output, COLUMNS)


app.command("share")(share_command("image", "corral image share tiny"))


@app.command("delete")
def delete(name: str, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
           data_dir: Path = DataDirOpt) -> None:
    """Delete an image (refused while VMs use it)."""
    with handled(), client(data_dir) as c:
        follow(c, c.delete_image(name), f"delete image {name}", wait, output)
