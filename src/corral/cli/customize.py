"""`corral image customize` and `corral vm customize`: offline guest changes through libguestfs."""

from __future__ import annotations

import base64
from pathlib import Path

import typer
from pydantic import ValidationError

from corral.api import GuestCustomize, GuestFile, GuestPassword
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, WaitOpt, client, follow, handled
from corral.errors import InvalidInput
from corral.secret_file import first_line

HostnameOpt = typer.Option(None, "--hostname", help="Set the guest's host name")
PasswordOpt = typer.Option(None, "--password", metavar="USER:PASSWORD",
                           help="Set a user's password (repeatable; see --password-file)")
PasswordFileOpt = typer.Option(None, "--password-file", metavar="USER:FILE",
                               help="Set a user's password to the first line of FILE (repeatable)")
UploadOpt = typer.Option(None, "--upload", metavar="LOCAL:GUEST_PATH",
                         help="Copy a local file into the guest, keeping its mode (repeatable)")
RunOpt = typer.Option(None, "--run-command", "--run", metavar="COMMAND",
                      help="Run a shell command inside the guest, offline (repeatable)")


def _split(value: str, option: str) -> tuple[str, str]:
    left, sep, right = value.partition(":")
    if not sep or not left or not right:
        raise InvalidInput(f"{option} takes A:B, got {value!r}", field=option.lstrip("-"))
    return left, right


def build_request(hostname: str | None, passwords: list[str] | None,
                  password_files: list[str] | None, uploads: list[str] | None,
                  commands: list[str] | None) -> GuestCustomize:
    """The API request from the command-line options (local files are read here)."""
    pw = [_split(p, "--password") for p in passwords or []]
    for item in password_files or []:
        user, file = _split(item, "--password-file")
        pw.append((user, first_line(Path(file), "password-file")))
    files = []
    for item in uploads or []:
        local, guest = _split(item, "--upload")
        try:
            data = Path(local).read_bytes()
            mode = f"{Path(local).stat().st_mode & 0o777:04o}"
        except OSError as exc:
            raise InvalidInput(f"cannot read {local}: {exc.strerror}", field="upload") from None
        files.append({"path": guest, "content": base64.b64encode(data).decode(), "mode": mode})
    try:
        return GuestCustomize(
            hostname=hostname,
            passwords=[GuestPassword(user=u, password=p) for u, p in pw],
            files=[GuestFile(**f) for f in files],
            commands=list(commands or []),
        )
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> InvalidInput:
    """The first error of a request type's validation, as one clear line naming the field."""
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first.get("loc", ()))
    msg = first["msg"].removeprefix("Value error, ")
    if first.get("type") == "string_pattern_mismatch" and where == "checksum":
        msg = "must be sha256: followed by 64 hex digits"
    elif first.get("type") == "string_pattern_mismatch" and where == "format":
        msg = "must be one of auto, qcow2, raw, vmdk, vdi, iso"
    return InvalidInput(msg, field=where or None)


def image_customize(
    name: str = typer.Argument(..., help="Image name (no VM may use it yet)"),
    hostname: str | None = HostnameOpt, password: list[str] | None = PasswordOpt,
    password_file: list[str] | None = PasswordFileOpt, upload: list[str] | None = UploadOpt,
    run_command: list[str] | None = RunOpt,
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Change an image offline (libguestfs): hostname, files, passwords, commands, in that order.

    Works on a copy and keeps it only if every step succeeded. Refused while VMs use the
    image (their disks are overlays on it): customize those VMs instead.
    """
    with handled():
        req = build_request(hostname, password, password_file, upload, run_command)
        with client(data_dir) as c:
            follow(c, c.customize_image(name, req), f"customize image {name}", wait, output)


def vm_customize(
    name: str = typer.Argument(..., help="VM name (it must be stopped)"),
    hostname: str | None = HostnameOpt, password: list[str] | None = PasswordOpt,
    password_file: list[str] | None = PasswordFileOpt, upload: list[str] | None = UploadOpt,
    run_command: list[str] | None = RunOpt,
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Change a stopped VM's disk offline (libguestfs): hostname, files, passwords, commands.

    Works on a copy of the disk and keeps it only if every step succeeded.
    """
    with handled():
        req = build_request(hostname, password, password_file, upload, run_command)
        with client(data_dir) as c:
            follow(c, c.customize_vm(name, req), f"customize VM {name}", wait, output)
